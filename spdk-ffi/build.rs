//! With the `spdk` feature: finds an installed SPDK (`SPDK_DIR`, its install prefix, or
//! `pkg-config` on its `lib/pkgconfig`), generates bindings with bindgen and links SPDK
//! statically (whole archives: bdev modules and subsystems register themselves in
//! constructors) with DPDK and the system libraries it needs. Without the feature it
//! does nothing.

fn main() {
    println!("cargo:rerun-if-env-changed=SPDK_DIR");
    println!("cargo:rerun-if-changed=wrapper.h");
    #[cfg(feature = "spdk")]
    spdk::build();
}

#[cfg(feature = "spdk")]
mod spdk {
    use std::path::PathBuf;
    use std::process::Command;

    /// SPDK libraries the wrappers use, with the bdev modules a datanode can name.
    const LIBS: &[&str] = &[
        "spdk_env_dpdk",
        "spdk_init",
        "spdk_event_bdev",
        "spdk_blob_bdev",
        "spdk_blob",
        "spdk_bdev_aio",
        "spdk_bdev_malloc",
        "spdk_bdev_uring",
        "spdk_bdev_nvme",
    ];

    fn pkg_config(dir: &Option<PathBuf>, args: &[&str]) -> String {
        let mut c = Command::new("pkg-config");
        if let Some(d) = dir {
            c.env("PKG_CONFIG_PATH", d.join("lib/pkgconfig"));
        }
        let out = c.args(args).output().unwrap_or_else(|e| panic!("pkg-config: {e} (install pkg-config)"));
        if !out.status.success() {
            panic!(
                "the `spdk` feature needs an SPDK v25.09 installation: set SPDK_DIR to its install prefix \
                 (the directory with include/spdk and lib/pkgconfig) or put its lib/pkgconfig on \
                 PKG_CONFIG_PATH. pkg-config {args:?} said: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn build() {
        let dir = std::env::var_os("SPDK_DIR").map(PathBuf::from);
        let cflags = pkg_config(&dir, &[&["--cflags"][..], LIBS].concat());
        let libs = pkg_config(&dir, &[&["--libs"][..], LIBS].concat());
        let sys = pkg_config(&dir, &["--libs", "--static", "spdk_syslibs"]);
        for tok in libs.split_whitespace() {
            if let Some(p) = tok.strip_prefix("-L") {
                println!("cargo:rustc-link-search=native={p}");
            } else if let Some(l) = tok.strip_prefix("-l") {
                if l.starts_with("spdk_") {
                    // Constructors register bdev modules, subsystems and RPCs: keep all.
                    println!("cargo:rustc-link-lib=static:+whole-archive,-bundle={l}");
                } else {
                    println!("cargo:rustc-link-lib=dylib={l}");
                }
            }
        }
        for tok in sys.split_whitespace() {
            if let Some(p) = tok.strip_prefix("-L") {
                println!("cargo:rustc-link-search=native={p}");
            } else if let Some(l) = tok.strip_prefix("-l") {
                if !l.starts_with("spdk_") {
                    println!("cargo:rustc-link-lib=dylib={l}");
                }
            }
        }
        let mut b = bindgen::Builder::default()
            .header("wrapper.h")
            .allowlist_function("spdk_(env|dma|thread|set_thread|get_thread|put_io_channel|subsystem|bdev|bs|blob|xattr|log|poller|rpc)_.*")
            .allowlist_function("spdk_(set_thread|get_thread|put_io_channel|dma_malloc|dma_zmalloc|dma_free|vtophys)")
            .allowlist_type("spdk_(env_opts|blob_opts|bs_opts|blob_xattr_opts|xattr_names|bs_type)")
            .allowlist_var("SPDK_(BDEV_IO_TYPE|BLOB|BS|VERSION|LOG|RPC)_.*")
            // NVMe types reach bdev.h through passthru APIs the wrappers never use; one of
            // them is packed and aligned, which Rust cannot express.
            .opaque_type("spdk_nvme.*")
            .opaque_type("spdk_bdev_nvme.*")
            .opaque_type("spdk_bdev_ext_io_opts")
            .blocklist_type("spdk_nvme_ctrlr_data")
            .derive_default(true)
            .layout_tests(false)
            .generate_comments(false);
        for f in cflags.split_whitespace() {
            b = b.clang_arg(f);
        }
        let bindings = b.generate().expect("bindgen could not generate SPDK bindings");
        let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("bindings.rs");
        bindings.write_to_file(out).unwrap();
    }
}
