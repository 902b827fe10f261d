//! The admin page in a real browser: headless Chromium from Debian, driven through chromedriver
//! (WebDriver) at 320 px wide, by keyboard where a person would use one. Signs in with a policy
//! key, finds a device, reads its enrollment and registration state, disables it (the device's
//! next attempt is refused), enables it again (the device registers, the page shows it) and
//! deletes it, each effect visible at once and confirmed through the API; the key never reaches
//! a URL or storage. A screenshot is left in the test's target directory.

use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use fantoccini::key::Key;
use fantoccini::{Client, ClientBuilder, Locator};
use reqwest::{Method, StatusCode};
use serde_json::json;
use sqlx::PgPool;
use test_support::{Device, TestApp, TestTpm, POLICY, POLICY_KEY};

use crate::enrollments::fake_ek;

/// chromedriver on a free loopback port, killed on drop.
struct ChromeDriver {
    child: Child,
    port: u16,
}

impl ChromeDriver {
    fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // Its own process group, so that Drop also ends the browser it starts (a failing test
        // never reaches `close`).
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (Debian's chromium-driver; scripts/install-deps.sh installs it)");
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { child, port }
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        // The whole group: chromedriver and every Chromium process under it.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.wait();
    }
}

async fn browser(driver: &ChromeDriver, profile: &std::path::Path) -> Client {
    let capabilities = json!({
        "goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                // The test PKI's CA is not in Chromium's store.
                "--ignore-certificate-errors",
                format!("--user-data-dir={}", profile.display()),
            ],
            // A 320 px wide viewport (a desktop window cannot be that narrow).
            "mobileEmulation": {"deviceMetrics": {"width": 320, "height": 900, "pixelRatio": 1}},
        }
    });
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(capabilities.as_object().unwrap().clone())
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .expect("start Chromium")
}

/// The text of the element `#id`.
async fn text_of(c: &Client, id: &str) -> String {
    c.find(Locator::Id(id)).await.unwrap().text().await.unwrap()
}

/// Clicks the element `#id`.
async fn click(c: &Client, id: &str) {
    c.find(Locator::Id(id))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

/// Waits until `#message` says something containing `text`.
async fn message(c: &Client, text: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let shown = text_of(c, "message").await;
        if shown.contains(text) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "waited for {text:?}, the page says {shown:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn the_admin_page_works_in_a_real_browser(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    for i in 0..3u8 {
        app.enroll(&format!("bench-{i}"), &fake_ek(i)).await;
    }
    let mut t = TestTpm::recorded();
    let device = Device::of(&mut t.tpm);
    app.enroll(&device.registration_id, &device.ek).await;
    app.provision(&mut t, &device).await;
    let id = device.registration_id.clone();

    // The page's headers: nothing from elsewhere, no framing.
    let response = app
        .client
        .get(format!("{}/admin", app.base))
        .send()
        .await
        .unwrap();
    let csp = response.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("frame-ancestors 'none'") && csp.contains("script-src 'self'"));

    let driver = ChromeDriver::start();
    let profile = tempfile::tempdir().unwrap();
    let c = browser(&driver, profile.path()).await;
    c.goto(&format!("{}/admin", app.base)).await.unwrap();

    // Sign in by keyboard: type, then Enter.
    let name = c.find(Locator::Id("policy-name")).await.unwrap();
    name.clear().await.unwrap();
    name.send_keys(POLICY).await.unwrap();
    let key = c.find(Locator::Id("policy-key")).await.unwrap();
    key.send_keys(&STANDARD.encode(POLICY_KEY)).await.unwrap();
    key.send_keys(&Key::Enter.to_string()).await.unwrap();
    message(&c, "4 enrollments shown").await;

    // Find the device and open it with the keyboard.
    let search = c.find(Locator::Id("search")).await.unwrap();
    search.send_keys(&id).await.unwrap();
    search.send_keys(&Key::Enter.to_string()).await.unwrap();
    message(&c, "1 enrollment found").await;
    let open = c.find(Locator::Css("#rows button.link")).await.unwrap();
    assert_eq!(open.text().await.unwrap(), id);
    open.send_keys(&Key::Enter.to_string()).await.unwrap();
    c.wait()
        .for_element(Locator::Css(
            "#details:not([hidden]) #registration-fields dd",
        ))
        .await
        .unwrap();
    let registration = text_of(&c, "registration-fields").await;
    assert!(registration.contains("assigned"), "{registration}");
    assert!(
        registration.contains(test_support::HUBS[1]),
        "{registration}"
    );
    // No attestation policy: the page says so (an attested one shows its verdict and PCRs).
    assert!(registration.contains("not attested"), "{registration}");

    // Disable: the page shows it at once, and the API agrees.
    click(&c, "toggle").await;
    message(&c, "is disabled now").await;
    let (_, enrollment) = app
        .admin(Method::GET, &format!("/enrollments/{id}"), None)
        .await;
    assert_eq!(enrollment["provisioningStatus"], "disabled");
    let fields = text_of(&c, "enrollment-fields").await;
    assert!(fields.contains("disabled"), "{fields}");
    // The device's next registration attempt is refused.
    let (status, _) = app
        .put_register(&device.registration_id, &device.body(), None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(matches!(
        app.challenge_verdict(&device).await,
        Err(provisioning_service::registration::StepError::Refused(
            provisioning_service::registration::Refusal::Disabled
        ))
    ));

    // Readable at 320 px: nothing wider than the window.
    let screenshot = c.screenshot().await.unwrap();
    let artifact = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("admin-page-320px.png");
    std::fs::write(&artifact, screenshot).unwrap();
    println!("screenshot: {}", artifact.display());
    let widths = c
        .execute(
            "return [window.innerWidth, document.documentElement.scrollWidth,
                     [...document.querySelectorAll('*')]
                       .filter(e => e.getBoundingClientRect().right > window.innerWidth + 0.5)
                       .map(e => e.tagName + '#' + e.id + '.' + e.className).join(' ')]",
            vec![],
        )
        .await
        .unwrap();
    assert!(
        widths[0].as_i64().unwrap() <= 320 && widths[1].as_i64() <= widths[0].as_i64(),
        "wider than the window: {widths}"
    );

    // The key is nowhere but in the page's memory.
    let url = c.current_url().await.unwrap();
    assert!(!url.as_str().contains(&STANDARD.encode(POLICY_KEY)));
    let stored = c
        .execute(
            "return localStorage.length + sessionStorage.length + document.cookie.length",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(stored, json!(0));

    // Enable it again (by keyboard): the device registers, and the page shows its new state.
    let toggle = c.find(Locator::Id("toggle")).await.unwrap();
    assert_eq!(toggle.text().await.unwrap(), "Enable");
    toggle.send_keys(&Key::Enter.to_string()).await.unwrap();
    message(&c, "is enabled now").await;
    let before = text_of(&c, "registration-fields").await;
    app.provision(&mut t, &device).await;
    click(&c, "back").await;
    message(&c, "4 enrollments shown").await;
    let row = c
        .find(Locator::XPath(&format!("//button[text()='{id}']")))
        .await
        .unwrap();
    row.click().await.unwrap();
    c.wait()
        .for_element(Locator::Css(
            "#details:not([hidden]) #registration-fields dd",
        ))
        .await
        .unwrap();
    let after = text_of(&c, "registration-fields").await;
    assert!(
        after.contains("reprovisionedToInitialAssignment"),
        "{after}"
    );
    assert_ne!(before, after, "the registration's update shows");

    // Delete, with a confirmation step.
    click(&c, "delete").await;
    click(&c, "confirm-delete").await;
    message(&c, "was deleted").await;
    let (status, _) = app
        .admin(Method::GET, &format!("/enrollments/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // A wrong key is refused with the service's message, and nothing is shown.
    click(&c, "sign-out").await;
    let key = c.find(Locator::Id("policy-key")).await.unwrap();
    key.send_keys(&STANDARD.encode([7u8; 32])).await.unwrap();
    key.send_keys(&Key::Enter.to_string()).await.unwrap();
    message(&c, "Signing in failed (HTTP 401)").await;
    c.close().await.unwrap();
}
