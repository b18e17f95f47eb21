//! The benchmark corpus: real LaTeX manuals from Debian's `texlive-latex-base-doc`
//! package (downloaded with `apt-get download`, unpacked with `dpkg-deb -x`, never
//! installed), and one DOCX per PDF made from pdftotext's text of it.
//!
//! Layout under OUT: `debs/` (the .deb), `pkg/` (unpacked), `corpus/pdf/`,
//! `corpus/text/` (pdftotext output), `corpus/docx/`, and `corpus/manifest.json`, written
//! last, so its presence means the corpus is complete.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use worker_files::extract::DocumentKind;

use crate::report::Table;

pub const PACKAGE: &str = "texlive-latex-base-doc";
const DOC_ROOT: &str = "usr/share/doc/texlive-doc";

/// User-facing manuals and package documentation, 30 files, about 830 pages: prose,
/// tables, code listings, footnotes, two-column indexes.
const PDFS: [&str; 30] = [
    "latex/base/usrguide.pdf",
    "latex/base/clsguide.pdf",
    "latex/base/fntguide.pdf",
    "latex/base/encguide.pdf",
    "latex/base/cfgguide.pdf",
    "latex/base/modguide.pdf",
    "latex/base/cyrguide.pdf",
    "latex/base/lamport-manual.pdf",
    "latex/base/lthooks-doc.pdf",
    "latex/base/ltnews.pdf",
    "latex/amsmath/amsldoc.pdf",
    "latex/amscls/amsthdoc.pdf",
    "latex/graphics/grfguide.pdf",
    "latex/graphics/graphicx.pdf",
    "latex/graphics/color.pdf",
    "latex/psnfss/psnfss2e.pdf",
    "latex/natbib/natbib.pdf",
    "latex/geometry/geometry.pdf",
    "latex/hyperref/hyperref-doc.pdf",
    "latex/fancyhdr/fancyhdr.pdf",
    "latex/tools/longtable.pdf",
    "latex/tools/array.pdf",
    "latex/tools/multicol.pdf",
    "latex/tools/varioref.pdf",
    "latex/tools/tabularx.pdf",
    "latex/tools/calc.pdf",
    "latex/tools/verbatim.pdf",
    "latex/l3packages/xparse/xparse.pdf",
    "latex/l3kernel/expl3.pdf",
    "latex/l3kernel/l3styleguide.pdf",
];

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CorpusFile {
    /// File name inside the corpus folder, e.g. `usrguide.pdf`.
    pub name: String,
    pub kind: DocumentKind,
    pub bytes: u64,
    /// Pages of the PDF, or of the PDF a DOCX was made from.
    pub source_pages: u32,
    /// Stem shared by a PDF and its DOCX twin.
    pub stem: String,
    #[serde(skip)]
    pub path: PathBuf,
}

impl CorpusFile {
    pub fn content_type(&self) -> &'static str {
        match self.kind {
            DocumentKind::Pdf => "application/pdf",
            _ => "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Corpus {
    pub package: String,
    pub package_version: String,
    pub files: Vec<CorpusFile>,
    #[serde(skip)]
    pub dir: PathBuf,
}

impl Corpus {
    pub fn pdfs(&self) -> impl Iterator<Item = &CorpusFile> {
        self.files
            .iter()
            .filter(|file| file.kind == DocumentKind::Pdf)
    }

    /// pdftotext's text of a PDF (what its DOCX twin was made from).
    pub fn text_of(&self, stem: &str) -> anyhow::Result<String> {
        let path = self.dir.join("text").join(format!("{stem}.txt"));
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
    }

    pub fn print_overview(&self) {
        let mut table = Table::new(
            &format!(
                "Corpus: {} {} (PDF) + DOCX made from pdftotext's text of each, in {}",
                self.package,
                self.package_version,
                self.dir.display()
            ),
            &["kind", "files", "MiB", "pages (DOCX: of its source PDF)"],
        );
        for kind in [DocumentKind::Pdf, DocumentKind::Docx] {
            let files: Vec<&CorpusFile> =
                self.files.iter().filter(|file| file.kind == kind).collect();
            let bytes: u64 = files.iter().map(|file| file.bytes).sum();
            let pages: u32 = files.iter().map(|file| file.source_pages).sum();
            table.row(vec![
                kind.to_string(),
                files.len().to_string(),
                format!("{:.1}", bytes as f64 / 1_048_576.0),
                pages.to_string(),
            ]);
        }
        table.print();
    }
}

fn corpus_dir(out_dir: &Path) -> PathBuf {
    out_dir.join("corpus")
}

/// Loads the corpus built by [`ensure`].
pub fn load(out_dir: &Path) -> anyhow::Result<Corpus> {
    let dir = corpus_dir(out_dir);
    let manifest_path = dir.join("manifest.json");
    let bytes = std::fs::read(&manifest_path).with_context(|| {
        format!(
            "no corpus at {}: run `glassbox-bench corpus` (or bench/run.sh) first",
            dir.display()
        )
    })?;
    let mut corpus: Corpus = serde_json::from_slice(&bytes)?;
    for file in &mut corpus.files {
        let folder = match file.kind {
            DocumentKind::Pdf => "pdf",
            _ => "docx",
        };
        file.path = dir.join(folder).join(&file.name);
    }
    corpus.dir = dir;
    Ok(corpus)
}

/// Builds the corpus unless its manifest exists; returns it.
pub fn ensure(out_dir: &Path) -> anyhow::Result<Corpus> {
    if corpus_dir(out_dir).join("manifest.json").exists() {
        return load(out_dir);
    }
    build(out_dir)?;
    load(out_dir)
}

fn build(out_dir: &Path) -> anyhow::Result<()> {
    let deb = download_package(&out_dir.join("debs"))?;
    let package_version =
        command_text(Command::new("dpkg-deb").arg("-f").arg(&deb).arg("Version"))?
            .trim()
            .to_string();
    let unpacked = out_dir.join("pkg");
    if !unpacked.join(DOC_ROOT).exists() {
        println!("unpacking {} into {}", deb.display(), unpacked.display());
        run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacked))?;
    }
    let dir = corpus_dir(out_dir);
    for folder in ["pdf", "docx", "text"] {
        std::fs::create_dir_all(dir.join(folder))?;
    }
    let mut pdf_files = Vec::new();
    let mut docx_files = Vec::new();
    for relative in PDFS {
        let source = unpacked.join(DOC_ROOT).join(relative);
        let name = Path::new(relative)
            .file_name()
            .and_then(|name| name.to_str())
            .context("corpus entries end in a file name")?
            .to_string();
        let stem = name.trim_end_matches(".pdf").to_string();
        let pdf_path = dir.join("pdf").join(&name);
        std::fs::copy(&source, &pdf_path)
            .with_context(|| format!("copying {}", source.display()))?;
        let pages = pdf_pages(&pdf_path)?;
        let text = command_text(Command::new("pdftotext").arg(&pdf_path).arg("-"))?;
        std::fs::write(dir.join("text").join(format!("{stem}.txt")), &text)?;
        let paragraphs = paragraphs_of(&text);
        let paragraph_refs: Vec<&str> = paragraphs.iter().map(String::as_str).collect();
        let docx_name = format!("{stem}.docx");
        let docx_bytes = testkit::fixtures::docx_from_paragraphs(&paragraph_refs);
        std::fs::write(dir.join("docx").join(&docx_name), &docx_bytes)?;
        pdf_files.push(CorpusFile {
            name,
            kind: DocumentKind::Pdf,
            bytes: std::fs::metadata(&pdf_path)?.len(),
            source_pages: pages,
            stem: stem.clone(),
            path: PathBuf::new(),
        });
        docx_files.push(CorpusFile {
            name: docx_name,
            kind: DocumentKind::Docx,
            bytes: docx_bytes.len() as u64,
            source_pages: pages,
            stem,
            path: PathBuf::new(),
        });
    }
    // PDFs and DOCX interleaved, so any prefix of the list is a mix of both.
    let mut files = Vec::new();
    for (pdf, docx) in pdf_files.into_iter().zip(docx_files) {
        files.push(pdf);
        files.push(docx);
    }
    let corpus = Corpus {
        package: PACKAGE.to_string(),
        package_version,
        files,
        dir: dir.clone(),
    };
    std::fs::write(
        dir.join("manifest.json"),
        serde_json::to_vec_pretty(&corpus)?,
    )?;
    Ok(())
}

/// The cached .deb, or `apt-get download` into `folder`.
fn download_package(folder: &Path) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(folder)?;
    if let Some(deb) = find_deb(folder)? {
        return Ok(deb);
    }
    println!(
        "downloading {PACKAGE} with apt-get download into {}",
        folder.display()
    );
    let status = Command::new("apt-get")
        .args(["download", PACKAGE])
        .current_dir(folder)
        .status()
        .context("running apt-get")?;
    if !status.success() {
        bail!("apt-get download {PACKAGE} failed ({status}); run `apt-get update` and try again");
    }
    find_deb(folder)?.context("apt-get download left no .deb behind")
}

fn find_deb(folder: &Path) -> anyhow::Result<Option<PathBuf>> {
    for entry in std::fs::read_dir(folder)? {
        let path = entry?.path();
        let name = path
            .file_name()
            .and_then(|name| name.to_str())
            .unwrap_or("");
        if name.starts_with(&format!("{PACKAGE}_")) && name.ends_with(".deb") {
            return Ok(Some(path));
        }
    }
    Ok(None)
}

fn pdf_pages(path: &Path) -> anyhow::Result<u32> {
    let info = command_text(Command::new("pdfinfo").arg(path))?;
    info.lines()
        .find_map(|line| line.strip_prefix("Pages:"))
        .and_then(|pages| pages.trim().parse().ok())
        .with_context(|| format!("pdfinfo gave no page count for {}", path.display()))
}

/// Paragraphs of pdftotext output: blocks separated by blank lines or page breaks, with
/// their lines joined by spaces; characters XML cannot carry are dropped.
fn paragraphs_of(text: &str) -> Vec<String> {
    let mut paragraphs = Vec::new();
    for page in text.split('\u{c}') {
        let mut current: Vec<&str> = Vec::new();
        for line in page.lines().map(str::trim) {
            if line.is_empty() {
                push_paragraph(&mut paragraphs, &current);
                current.clear();
            } else {
                current.push(line);
            }
        }
        push_paragraph(&mut paragraphs, &current);
    }
    paragraphs
}

fn push_paragraph(paragraphs: &mut Vec<String>, lines: &[&str]) {
    if lines.is_empty() {
        return;
    }
    let joined: String = lines
        .join(" ")
        .chars()
        .filter(|character| !character.is_control())
        .collect();
    if !joined.trim().is_empty() {
        paragraphs.push(joined);
    }
}

fn run(command: &mut Command) -> anyhow::Result<()> {
    let status = command
        .status()
        .with_context(|| format!("running {command:?}"))?;
    if !status.success() {
        bail!("{command:?} failed: {status}");
    }
    Ok(())
}

fn command_text(command: &mut Command) -> anyhow::Result<String> {
    let output = command
        .output()
        .with_context(|| format!("running {command:?}"))?;
    if !output.status.success() {
        bail!(
            "{command:?} failed: {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paragraphs_join_lines_and_split_on_blank_lines_and_pages() {
        let text = "First line\nsecond line\n\nNext\u{c}Page two\u{b}\n";
        assert_eq!(
            paragraphs_of(text),
            vec!["First line second line", "Next", "Page two"]
        );
    }
}
