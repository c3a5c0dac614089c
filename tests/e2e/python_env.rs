//! The Python the tests run is the pinned one: `.ci/run` builds a virtual
//! environment from `tests/python/requirements.txt` and names its
//! interpreter in `TRACELAKE_PYTHON`; what is installed there must be
//! exactly that list, at those versions, and nothing else.

use std::collections::BTreeMap;

/// A distribution name as pip compares them (PEP 503).
fn normalize(name: &str) -> String {
    name.trim().to_lowercase().replace(['_', '.'], "-")
}

/// `name==version` lines (comments and blank lines ignored) as a map.
fn pins(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .map(|l| l.split('#').next().unwrap().trim())
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (name, version) = l
                .split_once("==")
                .unwrap_or_else(|| panic!("not pinned with ==: {l}"));
            (normalize(name), version.trim().to_string())
        })
        .collect()
}

#[test]
fn python_environment_is_exactly_the_pinned_requirements() {
    let Ok(python) = std::env::var("TRACELAKE_PYTHON") else {
        crate::skip::skip(
            "TRACELAKE_PYTHON is not set: the tests run python3 as found, not the pinned environment of .ci/run",
        );
        return;
    };
    let wanted =
        pins(&std::fs::read_to_string(crate::checkout("tests/python/requirements.txt")).unwrap());
    let out = std::process::Command::new(&python)
        .args([
            "-m",
            "pip",
            "freeze",
            "--all",
            "--disable-pip-version-check",
        ])
        .output()
        .unwrap_or_else(|e| panic!("{python}: {e}"));
    assert!(out.status.success(), "{python} -m pip freeze: {out:?}");
    let mut installed = pins(&String::from_utf8(out.stdout).unwrap());
    // What every virtual environment starts with, not something the tests use.
    for tool in ["pip", "setuptools", "wheel"] {
        installed.remove(tool);
    }
    assert_eq!(
        installed, wanted,
        "{python} must hold exactly tests/python/requirements.txt"
    );
}
