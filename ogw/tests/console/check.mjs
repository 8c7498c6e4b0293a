// Drives Debian's Chromium (headless, through playwright-core) through the gateway's
// web console, for `ogw/tests/operations.rs`:
//   node check.mjs ADMIN_URL TOKEN BUCKET SCREENSHOT
// Prints one JSON object of what it saw; the Rust test judges it. Exits 1 (with the
// error) when the browser or a page does not do what a user would need.
import { chromium } from "playwright-core";

const [admin, token, bucket, screenshot] = process.argv.slice(2);
const seen = {};
const browser = await chromium.launch({
  executablePath: process.env.STRATA_CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
try {
  const page = await browser.newPage();
  // Anything the page asks of another origin is a failure: it must work offline.
  const foreign = [];
  page.on("request", (r) => { if (!r.url().startsWith(admin)) foreign.push(r.url()); });
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  // A CSP violation or a failed load shows as a console error.
  page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });

  // Not logged in: the console sends us to the login form, and its API refuses.
  await page.goto(`${admin}/console`);
  seen.unauthenticated_page = new URL(page.url()).pathname;
  seen.unauthenticated_api_status = (await page.request.get(`${admin}/console/api/overview`)).status();

  // A wrong token is refused and leaves us on the form.
  await page.fill("#token", "not-the-token");
  await Promise.all([page.waitForLoadState("load"), page.click("button[type=submit]")]);
  seen.wrong_token_page = new URL(page.url()).pathname;
  seen.wrong_token_message = (await page.locator("#error").count()) > 0
    ? await page.locator("#error").innerText() : null;

  // The right one opens the console.
  await page.fill("#token", token);
  await Promise.all([page.waitForURL(`${admin}/console`), page.click("button[type=submit]")]);
  seen.logged_in_page = new URL(page.url()).pathname;
  // From here on, no error at all (before, the refused login was one, on purpose).
  seen.errors_before_login = errors.splice(0);

  // The overview arrives: health, the nodes, the bucket with its objects.
  await page.waitForFunction(() => document.querySelectorAll("#datanodes tbody tr").length > 0, null, { timeout: 30000 });
  seen.health = await page.locator("#health").innerText();
  seen.datanode_rows = await page.locator("#datanodes tbody tr").count();
  seen.metanode_rows = await page.locator("#metanodes tbody tr").count();
  await page.waitForFunction((b) => [...document.querySelectorAll("#buckets tbody tr")]
    .some((tr) => tr.children[1].textContent === b), bucket, { timeout: 60000 });
  seen.bucket_row = await page.evaluate((b) => {
    const tr = [...document.querySelectorAll("#buckets tbody tr")].find((r) => r.children[1].textContent === b);
    return [...tr.children].map((td) => td.textContent);
  }, bucket);

  // The plots draw what the traffic did: a request rate above zero, and lines in
  // the series' colour on the canvas itself.
  await page.waitForFunction(() => Number(document.getElementById("plot-requests").dataset.max || 0) > 0,
    null, { timeout: 60000 });
  for (const name of ["throughput", "latency", "capacity"]) {
    await page.waitForFunction((n) => Number(document.getElementById(`plot-${n}`).dataset.max || 0) > 0,
      name, { timeout: 60000 });
  }
  seen.plots = await page.evaluate(() => Object.fromEntries(
    ["capacity", "requests", "throughput", "latency"].map((name) => {
      const c = document.getElementById(`plot-${name}`);
      const px = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
      const near = (i, [r, g, b]) => Math.abs(px[i] - r) < 24 && Math.abs(px[i + 1] - g) < 24
        && Math.abs(px[i + 2] - b) < 24 && px[i + 3] > 200;
      let line = 0;
      for (let i = 0; i < px.length; i += 4) {
        // Either series' colour, #1a73e8 or #d93025 (anti-aliased edges excluded).
        if (near(i, [0x1a, 0x73, 0xe8]) || near(i, [0xd9, 0x30, 0x25])) line++;
      }
      return [name, { points: Number(c.dataset.points), max: Number(c.dataset.max), line_pixels: line }];
    })));
  await page.screenshot({ path: screenshot, fullPage: true });

  // Logging out ends the session on the server: the API refuses the browser again,
  // and the old cookie replayed by hand.
  const [session] = (await page.context().cookies()).filter((c) => c.name === "strata_console");
  seen.session_cookie = session ? { http_only: session.httpOnly, same_site: session.sameSite } : null;
  const replayed = async () => (await fetch(`${admin}/console/api/overview`,
    { headers: { cookie: `strata_console=${session.value}` } })).status;
  seen.replayed_cookie_status_before_logout = await replayed();
  await Promise.all([page.waitForURL(`${admin}/console/login`), page.click("#logout")]);
  seen.after_logout_api_status = (await page.request.get(`${admin}/console/api/overview`)).status();
  seen.replayed_cookie_status = await replayed();
  seen.foreign_requests = foreign;
  seen.page_errors = errors;
  console.log(JSON.stringify(seen));
} catch (e) {
  console.error(`console check: ${e.stack || e}\nseen so far: ${JSON.stringify(seen)}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
