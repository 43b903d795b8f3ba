//! The shipped systemd units: `systemd-analyze verify` accepts them (with
//! `ExecStart` pointed at the seerd just built), and the system unit's
//! sandbox scores as `systemd-analyze security` rates well-confined
//! services. The exposure of both is printed for the record.

use seer_tests::bin;
use std::path::{Path, PathBuf};
use std::process::Command;

fn unit(rel: &str, exec: &str, dir: &Path) -> PathBuf {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../share/systemd")
        .join(rel);
    let text = std::fs::read_to_string(&src).expect("unit file");
    assert!(text.contains(exec), "{rel} starts {exec}");
    let sub = dir.join(rel.split('/').next().expect("kind"));
    std::fs::create_dir_all(&sub).expect("mkdir");
    let out = sub.join("seerd.service");
    let seerd = bin("seerd");
    std::fs::write(&out, text.replace(exec, &seerd.to_string_lossy())).expect("write unit");
    out
}

fn exposure(unit: &Path) -> f64 {
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true"])
        .arg(unit)
        .output()
        .expect("systemd-analyze security");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no exposure in: {text}"));
    println!(
        "{}: {}",
        unit.display(),
        line.trim_start_matches('→').trim()
    );
    line.split(':')
        .nth(1)
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("exposure in {line:?}"))
}

#[test]
fn the_units_verify_and_the_system_unit_is_sandboxed() {
    let dir = tempfile::tempdir().expect("tmp");
    let system = unit("system/seerd.service", "/usr/local/bin/seerd", dir.path());
    let user = unit("user/seerd.service", "%h/.cargo/bin/seerd", dir.path());
    for u in [&system, &user] {
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .arg(u)
            .output()
            .expect("systemd-analyze verify");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && err.trim().is_empty(),
            "{}: {err}",
            u.display()
        );
    }
    let sys = exposure(&system);
    let _ = exposure(&user);
    // systemd rates 0-2 "OK" (4.4-9.6 is "exposed"): every directive the
    // unit leaves off is explained in it.
    assert!(sys <= 2.0, "the system unit's exposure is {sys}");
}
