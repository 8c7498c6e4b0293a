/* What spdk-ffi binds (SPDK v25.09). */
#include <spdk/stdinc.h>
#include <spdk/env.h>
#include <spdk/thread.h>
#include <spdk/init.h>
#include <spdk/bdev.h>
#include <spdk/blob.h>
#include <spdk/blob_bdev.h>
#include <spdk/log.h>
#include <spdk/version.h>
#include <spdk/rpc.h>
