//! Aligned tables on stdout, and the findings each section saves for `all`'s summary.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// A table printed with every column padded to its widest cell; the first column is
/// left-aligned, the others right-aligned (they hold numbers).
pub struct Table {
    title: String,
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(title: &str, headers: &[&str]) -> Self {
        Self {
            title: title.to_string(),
            headers: headers.iter().map(|header| header.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn print(&self) {
        let column_count = self.headers.len();
        let mut widths: Vec<usize> = self
            .headers
            .iter()
            .map(|header| header.chars().count())
            .collect();
        for row in &self.rows {
            for (column, cell) in row.iter().enumerate().take(column_count) {
                widths[column] = widths[column].max(cell.chars().count());
            }
        }
        let format_row = |cells: &[String]| {
            let mut line = String::new();
            for (column, width) in widths.iter().enumerate() {
                let cell = cells.get(column).map(String::as_str).unwrap_or("");
                if column > 0 {
                    line.push_str("  ");
                }
                let padding = " ".repeat(width.saturating_sub(cell.chars().count()));
                if column == 0 {
                    line.push_str(cell);
                    line.push_str(&padding);
                } else {
                    line.push_str(&padding);
                    line.push_str(cell);
                }
            }
            line.trim_end().to_string()
        };
        let total_width: usize =
            widths.iter().sum::<usize>() + 2 * (column_count.saturating_sub(1));
        println!();
        if !self.title.is_empty() {
            println!("{}", self.title);
        }
        println!("{}", format_row(&self.headers));
        println!("{}", "-".repeat(total_width));
        for row in &self.rows {
            println!("{}", format_row(row));
        }
    }
}

/// A section heading.
pub fn heading(text: &str) {
    println!();
    println!("== {text} ==");
}

/// One line of the final summary: our figure next to the reference and target of bench/README.md.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Finding {
    pub what: String,
    pub ours: String,
    pub reference: String,
    /// How we compare, e.g. "1.8x faster" or "0.97".
    pub comparison: String,
    pub target: String,
    /// Whether the target is met; `None` when this run cannot tell.
    pub met: Option<bool>,
}

fn results_dir(out_dir: &Path) -> PathBuf {
    out_dir.join("results")
}

pub fn save_findings(out_dir: &Path, section: &str, findings: &[Finding]) -> anyhow::Result<()> {
    let folder = results_dir(out_dir);
    std::fs::create_dir_all(&folder)?;
    let path = folder.join(format!("{section}.json"));
    std::fs::write(&path, serde_json::to_vec_pretty(findings)?)
        .with_context(|| format!("writing {}", path.display()))
}

pub fn load_findings(out_dir: &Path, section: &str) -> anyhow::Result<Vec<Finding>> {
    let path = results_dir(out_dir).join(format!("{section}.json"));
    if !path.exists() {
        return Ok(Vec::new());
    }
    let bytes = std::fs::read(&path)?;
    serde_json::from_slice(&bytes).with_context(|| format!("reading {}", path.display()))
}

pub fn clear_findings(out_dir: &Path) -> anyhow::Result<()> {
    let folder = results_dir(out_dir);
    if folder.exists() {
        std::fs::remove_dir_all(&folder)?;
    }
    Ok(())
}

pub fn print_summary(findings: &[Finding]) {
    heading("Summary against the targets (bench/README.md)");
    let mut table = Table::new(
        "",
        &["what", "ours", "reference", "comparison", "target", "met"],
    );
    for finding in findings {
        let met = match finding.met {
            Some(true) => "yes",
            Some(false) => "NO",
            None => "-",
        };
        table.row(vec![
            finding.what.clone(),
            finding.ours.clone(),
            finding.reference.clone(),
            finding.comparison.clone(),
            finding.target.clone(),
            met.to_string(),
        ]);
    }
    table.print();
}

/// `count / seconds`: two decimals below 10, one below 1000, none above.
pub fn rate(count: f64, seconds: f64) -> String {
    if seconds <= 0.0 {
        return "-".to_string();
    }
    let value = count / seconds;
    if value >= 1000.0 {
        format!("{value:.0}")
    } else if value >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    }
}

pub fn seconds(value: f64) -> String {
    format!("{value:.2}")
}

pub fn millis(value: f64) -> String {
    format!("{:.0}", value * 1000.0)
}

/// Kibibytes as MiB with one decimal.
pub fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

pub fn ratio(value: f64) -> String {
    format!("{value:.2}x")
}
