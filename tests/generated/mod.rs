//! Sections of README.md generated from the code: checked by tests, rewritten on request.

/// Fails unless README.md holds `body` between the `begin` and `end` markers (markers
/// included in `body`). With `LONGSHORE_UPDATE_README=1` it rewrites the section instead.
pub fn check_readme_section(begin: &str, end: &str, body: &str, what: &str) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/README.md");
    let readme = std::fs::read_to_string(path).expect("README.md");
    let (Some(a), Some(b)) = (readme.find(begin), readme.find(end)) else {
        panic!("README.md has no {what} markers");
    };
    let current = &readme[a..b + end.len()];
    if current == body {
        return;
    }
    if std::env::var("LONGSHORE_UPDATE_README").is_ok_and(|v| v == "1") {
        let updated = format!("{}{}{}", &readme[..a], body, &readme[b + end.len()..]);
        std::fs::write(path, updated).expect("write README.md");
        return;
    }
    panic!("README.md {what} is stale; regenerate with LONGSHORE_UPDATE_README=1.\nexpected:\n{body}\nfound:\n{current}");
}
