//! Finds the line of a key in YAML text, for errors found after parsing (cross-field checks).
//!
//! serde_norway (the maintained fork of serde_yaml) reports positions for its own errors but
//! gives deserialized values no spans, so this follows block-style indentation. It handles what
//! supervisor configs look like (nested block mappings); anything it cannot follow yields `None`
//! and the error is reported without a line. (serde-saphyr has spanned values but needs a newer
//! Rust than this workspace's rust-version.)

/// 1-based line of the key at `path` (e.g. `["health", "liveness_window"]`), if found.
pub(super) fn line_of(text: &str, path: &[&str]) -> Option<usize> {
    let mut stack: Vec<(usize, &str)> = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let content = raw.trim_start();
        if content.is_empty() || content.starts_with('#') || content.starts_with('-') {
            continue;
        }
        let indent = raw.len() - content.len();
        let Some((key, _)) = content.split_once(':') else {
            continue;
        };
        let key = key.trim().trim_matches(['"', '\'']);
        while stack.last().is_some_and(|&(i, _)| i >= indent) {
            stack.pop();
        }
        stack.push((indent, key));
        if stack.len() == path.len() && stack.iter().map(|&(_, k)| k).eq(path.iter().copied()) {
            return Some(index + 1);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::line_of;

    #[test]
    fn finds_nested_keys_and_skips_lookalikes() {
        let text = "# comment\nagent:\n  storage_dir: /x\nhealth:\n  start_timeout: 5s\n  \n  liveness_window: 9s\nother:\n  liveness_window: 1s\n";
        assert_eq!(line_of(text, &["health", "liveness_window"]), Some(7));
        assert_eq!(line_of(text, &["other", "liveness_window"]), Some(9));
        assert_eq!(line_of(text, &["agent"]), Some(2));
        assert_eq!(line_of(text, &["health", "missing"]), None);
    }
}
