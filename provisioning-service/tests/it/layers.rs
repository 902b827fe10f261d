//! The modules of `provisioning-service/src` use each other in one direction: the table in
//! docs/architecture.md ("Modules of provisioning-service, one direction") says which module
//! may use which, and every `crate::…` path in the source (imports and inline paths alike,
//! comments aside) must follow it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The table between `<!-- layers -->` and `<!-- /layers -->`: module → modules it may use.
fn table() -> BTreeMap<String, BTreeSet<String>> {
    let doc = std::fs::read_to_string(test_support::workspace_root().join("docs/architecture.md"))
        .unwrap();
    let section = doc
        .split("<!-- layers -->")
        .nth(1)
        .and_then(|rest| rest.split("<!-- /layers -->").next())
        .expect("the layers table in docs/architecture.md");
    let names = |cell: &str| -> BTreeSet<String> {
        cell.split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_owned)
            .collect()
    };
    let mut table = BTreeMap::new();
    for row in section.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = row.split('|').collect();
        for module in names(cells[1]) {
            table.insert(module, names(cells[2]));
        }
    }
    assert!(table.len() > 10, "{table:?}");
    table
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The crate's modules, as `lib.rs` declares them.
fn modules(src: &Path) -> BTreeSet<String> {
    std::fs::read_to_string(src.join("lib.rs"))
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("pub mod ")?.strip_suffix(';'))
        .map(str::to_owned)
        .collect()
}

/// Every `crate::NAME` in `line` outside a comment.
fn crate_paths(line: &str) -> Vec<String> {
    let code = line.split("//").next().unwrap_or_default();
    code.match_indices("crate::")
        .filter(|(at, _)| {
            // `crate::` itself, not the tail of another word (`test_crate::`).
            !code[..*at]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_alphanumeric() || c == '_')
        })
        .map(|(at, m)| {
            code[at + m.len()..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect()
        })
        .collect()
}

/// The violations of `table` in the source tree `src`, one line each.
fn violations(src: &Path, table: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let modules = modules(src);
    let mut files = Vec::new();
    sources(src, &mut files);
    files.sort();
    let mut found = Vec::new();
    for file in files {
        let relative = file.strip_prefix(src).unwrap();
        let first = relative.iter().next().unwrap().to_string_lossy();
        let own = first.trim_end_matches(".rs").to_owned();
        if own == "lib" || own == "main" {
            continue;
        }
        let allowed = table
            .get(&own)
            .unwrap_or_else(|| panic!("module {own} has no row in the layers table"));
        let text = std::fs::read_to_string(&file).unwrap();
        for (n, line) in text.lines().enumerate() {
            for used in crate_paths(line) {
                if used != own && modules.contains(&used) && !allowed.contains(&used) {
                    found.push(format!(
                        "{}:{}: {own} uses crate::{used}, which its row does not allow",
                        relative.display(),
                        n + 1
                    ));
                }
            }
        }
    }
    found
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

#[test]
fn imports_follow_the_table() {
    let found = violations(&src(), &table());
    assert!(found.is_empty(), "\n{}", found.join("\n"));
}

/// Each module's opening comment says what it may use, as its row does (`//! Uses: …`).
#[test]
fn each_module_says_what_it_may_use() {
    let src = src();
    for (module, allowed) in table() {
        let file = if src.join(&module).join("mod.rs").exists() {
            src.join(&module).join("mod.rs")
        } else {
            src.join(format!("{module}.rs"))
        };
        let text = std::fs::read_to_string(&file).unwrap();
        let said: String = text
            .lines()
            .skip_while(|l| !l.starts_with("//! Uses:"))
            .take_while(|l| l.starts_with("//! "))
            .collect();
        assert!(!said.is_empty(), "{}: no `//! Uses:` line", file.display());
        let named: BTreeSet<String> = said
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_owned)
            .collect();
        let allowed: BTreeSet<String> = allowed.into_iter().filter(|m| *m != module).collect();
        assert_eq!(named, allowed, "{}", file.display());
    }
}

/// The check itself: an import against the table is named with its file and line.
#[test]
fn an_import_against_the_table_is_named() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("lib.rs"), "pub mod app;\npub mod store;\n").unwrap();
    std::fs::create_dir(dir.path().join("store")).unwrap();
    std::fs::write(
        dir.path().join("store/throttle.rs"),
        "// crate::app in a comment is fine\nuse crate::app::App;\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("app.rs"), "use crate::store::Db;\n").unwrap();
    assert_eq!(
        violations(dir.path(), &table()),
        ["store/throttle.rs:2: store uses crate::app, which its row does not allow"]
    );
}
