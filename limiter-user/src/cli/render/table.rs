//! The table every renderer draws into, and the cell formats they share.

use comfy_table::{CellAlignment, Table, presets};

/// A table with no borders, columns three spaces apart (kubectl's look).
pub fn table(header: &[&str], numeric_from: usize) -> Table {
    let mut t = Table::new();
    t.load_preset(presets::NOTHING).set_header(header.to_vec());
    for (i, column) in t.column_iter_mut().enumerate() {
        column.set_padding((0, 3));
        if i >= numeric_from {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
    t
}

pub fn render(t: &Table) -> String {
    // comfy-table pads the last column and draws the (blank) header rule; neither is wanted.
    let mut out: Vec<String> = t.lines().map(|l| l.trim_end().to_string()).collect();
    out.retain(|l| !l.is_empty());
    out.join("\n")
}

pub const NO_RULES: &str = "no rules (add one with `limiter set DEST --max-connections N`)";

pub fn opt(v: Option<u32>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}
