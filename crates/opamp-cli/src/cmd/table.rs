//! Plain-text tables with left-aligned, space-padded columns.

/// Renders `header` and `rows` as aligned columns separated by two spaces.
pub(crate) fn render(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(width) = widths.get_mut(i) {
                *width = (*width).max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            let width = widths.get(i).copied().unwrap_or(0);
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}  "));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out.pop();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up_under_the_widest_cell() {
        let text = render(
            &["ID", "STATUS"],
            &[
                vec!["r-1".into(), "completed".into()],
                vec!["rollout-22".into(), "canary".into()],
            ],
        );
        assert_eq!(
            text,
            "ID          STATUS\nr-1         completed\nrollout-22  canary"
        );
    }
}
