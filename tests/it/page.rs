//! The status page at `/` as a browser renders it: the real daemon, loaded
//! in Debian's headless Chromium, assertions on the rendered DOM for a
//! healthy daemon (on the shipped defaults) and a failing one, and a
//! 390 px-wide phone screenshot. With `VIGIL_SCREENSHOTS=DIR` the tests
//! also write the README's desktop screenshots there (docs/screenshots.sh).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::*;

/// Chromium, which must be installed: a missing browser fails the test
/// (tests/run.sh installs it).
fn chromium() -> &'static str {
    let found = Command::new("chromium")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "test setup: chromium is missing; install Debian's package: apt-get install -y chromium (tests/run.sh does)"
    );
    "chromium"
}

/// Runs headless Chromium on `url` with `args` (own profile, so parallel
/// tests never share one); returns stdout. Killed after a minute.
fn headless(url: &str, args: &[&str]) -> String {
    let profile = tempfile::tempdir().unwrap();
    let mut child = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            "--force-device-scale-factor=1",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn chromium");
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || std::io::read_to_string(stdout).unwrap_or_default());
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("chromium did not finish with {url} within a minute");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = reader.join().unwrap();
    let err = std::io::read_to_string(child.stderr.take().unwrap()).unwrap_or_default();
    assert!(status.success(), "chromium {args:?} {url}: {status}\n{err}");
    out
}

/// The DOM after Chromium loaded and laid out the page.
fn dom(vigil: &Vigil) -> String {
    headless(&format!("http://{}/", vigil.addr), &["--dump-dom"])
}

/// A PNG of the page at `width`×`height`; returns its bytes.
fn screenshot(url: &str, file: &Path, width: u32, height: u32) -> Vec<u8> {
    headless(
        url,
        &[
            &format!("--screenshot={}", file.display()),
            &format!("--window-size={width},{height}"),
        ],
    );
    std::fs::read(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

/// Width and height from a PNG's IHDR chunk.
fn png_size(png: &[u8]) -> (u32, u32) {
    assert!(
        png.len() > 24 && png.starts_with(b"\x89PNG\r\n\x1a\n"),
        "not a PNG"
    );
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    (be(&png[16..20]), be(&png[20..24]))
}

/// The page as a phone shows it: a real PNG 390 px wide, carrying far more
/// than a blank page of the same size does.
fn assert_phone_render(vigil: &Vigil) {
    let dir = tempfile::tempdir().unwrap();
    let page = screenshot(
        &format!("http://{}/", vigil.addr),
        &dir.path().join("page.png"),
        390,
        1200,
    );
    let blank = screenshot("about:blank", &dir.path().join("blank.png"), 390, 1200);
    assert_eq!(png_size(&page), (390, 1200));
    assert!(
        page.len() > 4 * blank.len(),
        "the 390 px render looks empty: {} bytes, a blank page {}",
        page.len(),
        blank.len()
    );
}

/// The page laid out 390 px wide (in a `srcdoc` frame of that width: a
/// headless window is never narrower than 500 px) has nothing wider than
/// the screen, and every table is stacked into cards (its header hidden).
fn assert_fits_a_phone(vigil: &Vigil) {
    let page = vigil.get("/").body;
    let srcdoc = page.replace('&', "&amp;").replace('"', "&quot;");
    let probe = format!(
        "<!doctype html><html><body><iframe id=\"f\" width=\"390\" height=\"1200\" style=\"border:0\" srcdoc=\"{srcdoc}\"></iframe>\
         <script>const f = document.getElementById('f');\
         f.addEventListener('load', () => {{\
           const d = f.contentDocument, b = document.body.dataset;\
           b.scrollWidth = d.documentElement.scrollWidth;\
           b.clientWidth = d.documentElement.clientWidth;\
           b.heads = [...d.querySelectorAll('thead')].map(t => f.contentWindow.getComputedStyle(t).display).join(',');\
         }});</script></body></html>"
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("probe.html");
    std::fs::write(&file, probe).unwrap();
    let dom = headless(
        &format!("file://{}", file.display()),
        &["--window-size=1280,1400", "--dump-dom"],
    );
    let attr = |name: &str| {
        let at = dom
            .find(&format!("data-{name}=\""))
            .unwrap_or_else(|| panic!("no {name}: {dom}"));
        let rest = &dom[at + name.len() + 7..];
        rest[..rest.find('"').unwrap()].to_owned()
    };
    assert_eq!(attr("client-width"), "390");
    let width: u32 = attr("scroll-width").parse().unwrap();
    assert!(
        width <= 390,
        "the page is {width} px wide on a 390 px screen"
    );
    let heads = attr("heads");
    assert!(
        !heads.is_empty() && heads.split(',').all(|d| d == "none"),
        "tables not stacked into cards at 390 px: thead display {heads}"
    );
}

/// With `VIGIL_SCREENSHOTS=DIR`: `DIR/status-page-<name>.png` at desktop
/// width and `DIR/status-page-<name>-phone.png` at 390 px.
fn keep_screenshot(vigil: &Vigil, name: &str) {
    let Some(dir) = std::env::var_os("VIGIL_SCREENSHOTS") else {
        return;
    };
    let url = format!("http://{}/", vigil.addr);
    let dir = PathBuf::from(dir);
    for (suffix, width, height) in [("", 1280, 1000), ("-phone", 390, 1400)] {
        let file = dir.join(format!("status-page-{name}{suffix}.png"));
        let png = screenshot(&url, &file, width, height);
        assert_eq!(png_size(&png), (width, height));
    }
}

/// The markup of the job row `job`.
fn job_row<'a>(dom: &'a str, job: &str) -> &'a str {
    let start = dom
        .find(&format!("data-job=\"{job}\""))
        .unwrap_or_else(|| panic!("no row for {job}:\n{dom}"));
    let end = dom[start..].find("</tr>").unwrap() + start;
    &dom[start..end]
}

/// Each `data-check="key"` row's key and status (its `class="check <status>"`), in page order.
fn check_rows(dom: &str) -> Vec<(String, String)> {
    dom.match_indices("<tr class=\"check ")
        .map(|(i, m)| {
            let rest = &dom[i + m.len()..];
            let status = rest[..rest.find('"').unwrap()].to_owned();
            let key_at = rest.find("data-check=\"").unwrap() + "data-check=\"".len();
            let key = rest[key_at..key_at + rest[key_at..].find('"').unwrap()].to_owned();
            (key, status)
        })
        .collect()
}

/// The shipped defaults (config.toml.example) with a source its `backup_*`
/// role may read: the catch-up run of the daily schedule backs it up.
#[test]
fn a_healthy_daemon_on_the_shipped_defaults_renders_a_passing_job_row() {
    chromium();
    let crate::truth::ShippedExample {
        catalog: _catalog,
        source: _source,
        dir,
        text,
    } = crate::truth::shipped_example(
        "CREATE TABLE orders (id int); INSERT INTO orders SELECT generate_series(1, 1000)",
    );
    let options = VigilOptions {
        env: Default::default(),
        ..VigilOptions::default()
    };
    let vigil = Vigil::start_text(dir, &text, options);
    vigil.wait_ready();
    let freshness = |v: &Vigil| {
        v.get("/health/detailed").json()["checks"]["orders:freshness"][0]["status"].clone()
    };
    vigil.wait_for("the catch-up backup", Duration::from_secs(90), || {
        freshness(&vigil) == "pass"
    });

    let dom = dom(&vigil);
    assert!(
        dom.contains("<meta http-equiv=\"refresh\" content=\"30\">"),
        "{dom}"
    );
    let row = job_row(&dom, "orders");
    assert!(row.contains("data-state=\"pass\""), "{row}");
    assert!(
        row.contains("class=\"age fresh\""),
        "newest backup's age: {row}"
    );
    // The daily schedule's derived thresholds: one missed run warns, two fail.
    assert!(row.contains("warns at 1d 12h, fails at 2d 12h"), "{row}");
    assert!(row.contains("1 backup kept"), "{row}");
    assert!(row.contains(" KiB") || row.contains(" B<"), "size: {row}");
    assert!(row.contains("data-label=\"Next run\"><div><time"), "{row}");
    assert_eq!(
        row.matches(">never<").count(),
        2,
        "no verify, no drill: {row}"
    );
    assert!(
        row.contains("data-label=\"Recovery window\"><div>—"),
        "{row}"
    );
    assert!(dom.contains("backup.succeeded"), "audit events: {dom}");
    assert!(dom.contains("succeeded</span>"), "recent runs: {dom}");
    assert!(dom.contains(env!("CARGO_PKG_VERSION")), "{dom}");
    assert!(
        !dom.contains("backup-pw-Kq2") && !dom.contains(PASSWORD),
        "{dom}"
    );

    assert_phone_render(&vigil);
    assert_fits_a_phone(&vigil);
    keep_screenshot(&vigil, "healthy");
}

/// One job backs up; `billing`'s source is down (a closed port, with a
/// password in its URL) and its runs fail.
#[test]
fn a_failing_daemon_renders_failing_checks_first_with_output_and_no_secret() {
    chromium();
    let db = fresh_db();
    db.psql("CREATE TABLE orders (id int); INSERT INTO orders SELECT generate_series(1, 5000);")
        .unwrap();
    let repo = tempfile::tempdir().unwrap();
    let source_secret = "Src-pw-9vQ4-never-shown";
    let extra = format!(
        "[repositories.local]\nscheme = \"fs\"\n[repositories.local.options]\nroot = \"{repo}\"\n\
         [jobs.orders]\nkind = \"postgres\"\nsource = \"{url}\"\npassword = \"${{TEST_PGPASSWORD}}\"\n\
         databases = [\"{name}\"]\nrepository = \"local\"\nschedule = \"0 30 2 * * *\"\n\
         [jobs.orders.verify]\nevery = \"3s\"\n\
         [jobs.orders.drill]\nevery = \"3s\"\ntarget = \"postgres://postgres:${{TEST_PGPASSWORD}}@127.0.0.1:{db_port}/{name}_drill\"\ncheck_sql = [\"SELECT count(*) = 5000 FROM orders\"]\n\
         [jobs.billing]\nkind = \"postgres\"\nsource = \"postgres://backup:{source_secret}@127.0.0.1:{port}/billing\"\n\
         databases = [\"billing\"]\nrepository = \"local\"\nevery = \"4s\"\ncatch_up = false\n",
        repo = repo.path().display(),
        url = db.url(),
        name = db.name,
        db_port = db.port,
        port = free_port(),
    );
    let vigil = Vigil::start(&db, &extra);
    vigil.wait_ready();
    let check = |v: &Vigil, key: &str| v.get("/health/detailed").json()["checks"][key][0].clone();
    vigil.wait_for("orders backed up", Duration::from_secs(60), || {
        check(&vigil, "orders:freshness")["status"] == "pass"
    });
    // Its scheduled verification and drill read that backup back.
    for key in ["orders:verify", "orders:drill"] {
        vigil.wait_for(key, Duration::from_secs(90), || {
            check(&vigil, key)["status"] == "pass"
        });
    }
    vigil.wait_for(
        "billing's runs to fail twice",
        Duration::from_secs(60),
        || {
            let c = check(&vigil, "billing:freshness");
            c["status"] == "fail" && c["vigil"]["consecutiveFailures"].as_u64() >= Some(2)
        },
    );
    vigil.wait_for("billing:source to fail", Duration::from_secs(30), || {
        check(&vigil, "billing:source")["status"] == "fail"
    });
    let source_output = check(&vigil, "billing:source")["output"]
        .as_str()
        .unwrap()
        .to_owned();

    let dom = dom(&vigil);
    assert!(dom.contains("id=\"overall\" data-status=\"fail\""), "{dom}");
    let rows = check_rows(&dom);
    let rank = |s: &str| {
        ["fail", "warn", "pass"]
            .iter()
            .position(|r| *r == s)
            .unwrap()
    };
    assert_eq!(rows[0].1, "fail", "a failing check leads: {rows:?}");
    assert!(
        rows.windows(2).all(|w| rank(&w[0].1) <= rank(&w[1].1)),
        "failing checks first: {rows:?}"
    );
    let first_pass = rows.iter().position(|r| r.1 == "pass").unwrap();
    for key in ["billing:source", "billing:freshness"] {
        let at = rows.iter().position(|r| r.0 == key).unwrap();
        assert!(at < first_pass && rows[at].1 == "fail", "{key}: {rows:?}");
    }
    // Failing checks sit above the jobs, with their output as served.
    let attention = &dom[..dom.find("id=\"jobs\"").unwrap()];
    let shown = source_output
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    assert!(attention.contains(&shown), "{source_output}:\n{attention}");
    assert!(attention.contains("runs failed"), "{attention}");

    assert!(job_row(&dom, "billing").contains("data-state=\"fail\""));
    assert!(job_row(&dom, "billing").contains("none yet"));
    let orders = job_row(&dom, "orders");
    assert!(orders.contains("data-state=\"pass\""), "{orders}");
    // The board's proof records, end to end: a verdict and an RTO, not "never".
    assert!(!orders.contains(">never<"), "{orders}");
    assert!(
        orders.contains(" ago") && orders.contains(" read"),
        "verify: {orders}"
    );
    assert!(orders.contains("RTO "), "drill: {orders}");
    let runs = &dom[dom.find("id=\"runs\"").unwrap()..];
    assert!(
        runs.contains("billing") && runs.contains(">failed</span>"),
        "{runs}"
    );
    assert!(dom.contains("backup.failed"), "audit events: {dom}");
    assert!(
        !dom.contains(source_secret),
        "the source's password leaked:\n{dom}"
    );
    assert!(
        !dom.contains(PASSWORD),
        "the catalog's password leaked:\n{dom}"
    );

    assert_phone_render(&vigil);
    assert_fits_a_phone(&vigil);
    keep_screenshot(&vigil, "failing");
}
