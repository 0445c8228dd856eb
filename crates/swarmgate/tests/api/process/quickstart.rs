//! The README's quick start, as written there, against `swarmgate demo`.

use crate::common::*;

#[tokio::test]
async fn the_readme_quick_start_runs_against_swarmgate_demo() {
    if std::process::Command::new("curl")
        .arg("--version")
        .output()
        .is_err()
    {
        panic!("curl is needed to run the README's quick start");
    }
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let section = readme.split("## Quick start").nth(1).unwrap();
    let script = section
        .split("```bash\n")
        .nth(1)
        .unwrap()
        .split("```")
        .next()
        .unwrap();
    let port = free_port();
    let dir =
        std::env::temp_dir().join(format!("sg-demo-{}", swarmgate_core::random::uuid_simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut demo = tokio::process::Command::new(env!("CARGO_BIN_EXE_swarmgate"))
        .arg("demo")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("SWARMGATE_LISTEN", format!("127.0.0.1:{port}"))
        .current_dir(&dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    wait_until_answering(&format!("http://127.0.0.1:{port}/health")).await;
    let script = script.replace("127.0.0.1:8005", &format!("127.0.0.1:{port}"));
    let out = tokio::process::Command::new("bash")
        .args(["-euo", "pipefail", "-c", &script])
        .current_dir(&dir)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("\"username\":\"john_doe\""), "{stdout}");
    assert!(
        stdout.contains("Mock reply: you said Hello, gateway!."),
        "plain completion: {stdout}"
    );
    assert!(
        stdout.contains("data: [DONE]"),
        "streamed completion: {stdout}"
    );
    assert!(
        stdout.contains("\"group\":\"demo-model\"") && stdout.contains("\"requests\":2"),
        "usage: {stdout}"
    );
    assert!(stdout.contains("\n204\n"), "logout: {stdout}");
    assert!(
        stdout
            .trim_end()
            .ends_with("\"session_revoked\",\"message\":\"session has been revoked\"}}"),
        "{stdout}"
    );
    demo.start_kill().unwrap();
    let _ = demo.wait().await;
}
