//! Shell scripts run by the tests (through a mount, or inside a container) and the
//! `@key=value` reports they print.

use super::*;

/// Single-quote for sh.
pub fn sq(s: impl AsRef<OsStr>) -> String {
    format!("'{}'", s.as_ref().to_string_lossy().replace('\'', r"'\''"))
}

/// Shell functions every script starts with. `run CMD...` reports a failing operation as
/// `@fail=CMD: ERROR`; `st PATH` prints the file type or `ENOENT`; `lst DIR` the sorted names.
pub const PRELUDE: &str = r#"
export LC_ALL=C
show() { printf '@%s=%s\n' "$1" "$2"; }
run() { err=$("$@" 2>&1) || printf '@fail=%s: %s\n' "$*" "$(echo $err)"; }
st() { if out=$(stat -c %F "$1" 2>&1); then echo "$out"; else case "$out" in *"No such file"*) echo ENOENT;; *) echo "ERR:$out";; esac; fi; }
lst() { echo $(ls -A "$1" 2>&1); }
"#;

/// The `@key=value` lines of a script's output, and the `@fail=` ones separately.
pub fn parse_report(stdout: &str) -> (BTreeMap<String, String>, Vec<String>) {
    let mut kv = BTreeMap::new();
    let mut fails = Vec::new();
    for line in stdout.lines() {
        let Some(rest) = line.strip_prefix('@') else {
            continue;
        };
        let (k, v) = rest.split_once('=').unwrap_or((rest, ""));
        if k == "fail" {
            fails.push(v.to_string());
        } else {
            kv.insert(k.to_string(), v.to_string());
        }
    }
    (kv, fails)
}

/// Asserts that a report has no `@fail=` line and that every key of `want` has its value;
/// returns the whole report for further checks.
pub fn assert_report(
    what: &str,
    stdout: &str,
    want: &[(&str, String)],
) -> BTreeMap<String, String> {
    let (kv, fails) = parse_report(stdout);
    let diffs: Vec<String> = want
        .iter()
        .filter(|(k, v)| kv.get(*k) != Some(v))
        .map(|(k, v)| format!("{k}: want {v:?}, got {:?}", kv.get(*k)))
        .collect();
    assert!(
        fails.is_empty() && diffs.is_empty(),
        "{what}:\n  failed operations: {fails:#?}\n  differences:\n    {}\nfull output:\n{stdout}",
        diffs.join("\n    ")
    );
    kv
}
