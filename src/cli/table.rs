//! Plain text tables: columns as wide as their widest cell, two spaces apart.

use std::fmt::Write as _;

/// A column's heading, and whether it holds numbers (aligned right).
pub(super) type Column = (&'static str, bool);

pub(super) fn render(columns: &[Column], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = columns.iter().map(|(h, _)| h.chars().count()).collect();
    for r in rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut text = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut l = String::new();
        for (i, ((cell, width), (_, number))) in cells.zip(&widths).zip(columns).enumerate() {
            if i > 0 {
                l.push_str("  ");
            }
            let pad = width.saturating_sub(cell.chars().count());
            if *number {
                l.extend(std::iter::repeat_n(' ', pad));
                l.push_str(cell);
            } else {
                l.push_str(cell);
                l.extend(std::iter::repeat_n(' ', pad));
            }
        }
        let _ = writeln!(text, "{}", l.trim_end());
    };
    line(&mut columns.iter().map(|(h, _)| *h));
    for r in rows {
        line(&mut r.iter().map(String::as_str));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_fit_their_widest_cell() {
        let text = render(
            &[("NAME", false), ("N", true)],
            &[
                vec!["a".into(), "100".into()],
                vec!["longer".into(), "2".into()],
            ],
        );
        assert_eq!(text, "NAME      N\na       100\nlonger    2\n");
    }
}
