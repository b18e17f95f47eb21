//! PPTX: one page per slide, in the presentation's order, and the speaker notes of each
//! slide as a page of their own (part `notes`, same number). A slide's title placeholder is
//! its heading. Tables read one line per row, cells separated by " | ".

use std::path::Path;

use quick_xml::Reader;
use quick_xml::events::Event;

use super::archive::CheckedArchive;
use super::error::human_bytes;
use super::ooxml::{attribute, folder_of, not_well_formed, relationships, resolve_part_path};
use super::structure::{HEADING_END_MARK, heading_start_mark, scrub_marks};
use super::{ExtractError, ExtractLimits, Page, TextPart, normalize_text};

const PRESENTATION: &str = "ppt/presentation.xml";
const PRESENTATION_RELS: &str = "ppt/_rels/presentation.xml.rels";

pub(super) fn extract_pptx(path: &Path, limits: &ExtractLimits) -> Result<Vec<Page>, ExtractError> {
    let mut archive = CheckedArchive::open(path, limits)?;
    if archive.find(PRESENTATION).is_none() {
        return Err(ExtractError::UnsupportedType {
            detail: "zip archive that is not a PPTX (no ppt/presentation.xml entry)".to_owned(),
        });
    }
    let slide_paths = slide_order(&mut archive)?;
    let mut budget = TextBudget::new(limits.max_text_bytes);
    let mut pages = Vec::new();
    for (position, slide_path) in slide_paths.iter().enumerate() {
        let number = Some(u32::try_from(position + 1).unwrap_or(u32::MAX));
        let slide_entry = archive
            .find(slide_path)
            .ok_or_else(|| ExtractError::Corrupt {
                detail: format!("PPTX lists slide {slide_path}, which the archive lacks"),
            })?;
        let slide_xml = archive.inflate(slide_entry)?;
        let marked = drawing_text(&slide_xml, slide_path, &mut budget)?;
        pages.push(Page::with_marked_headings(number, &normalize_text(&marked)));

        let rels_path = format!(
            "{}/_rels/{}.rels",
            folder_of(slide_path),
            slide_path.rsplit('/').next().unwrap_or_default()
        );
        let Some(rels_entry) = archive.find(&rels_path) else {
            continue;
        };
        let rels_xml = archive.inflate(rels_entry)?;
        let notes_path = relationships(&rels_xml, &rels_path)?
            .into_iter()
            .find(|relationship| relationship.kind == "notesSlide")
            .map(|relationship| resolve_part_path(folder_of(slide_path), &relationship.target));
        let Some(notes_entry) = notes_path.as_deref().and_then(|notes| archive.find(notes)) else {
            continue;
        };
        let notes_xml = archive.inflate(notes_entry)?;
        let notes = normalize_text(&drawing_text(&notes_xml, slide_path, &mut budget)?);
        if !notes.is_empty() {
            pages.push(Page {
                part: Some(TextPart::Notes),
                ..Page::with_marked_headings(number, &notes)
            });
        }
    }
    if pages.is_empty() {
        pages.push(Page::new(None, String::new()));
    }
    Ok(pages)
}

/// The slides' part paths in presentation order (`p:sldIdLst`), or, when the presentation
/// lists none it can resolve, every `ppt/slides/slideN.xml` by number.
fn slide_order(archive: &mut CheckedArchive) -> Result<Vec<String>, ExtractError> {
    let presentation = archive.inflate_named(PRESENTATION, "PPTX")?;
    let mut slide_ids = Vec::new();
    let mut reader = Reader::from_reader(presentation.as_slice());
    loop {
        match reader
            .read_event()
            .map_err(|error| not_well_formed(PRESENTATION, &error))?
        {
            Event::Start(element) | Event::Empty(element)
                if element.local_name().as_ref() == b"sldId" =>
            {
                if let Some(id) = relationship_id(&element) {
                    slide_ids.push(id);
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    let mut ordered = Vec::new();
    if let Some(rels_entry) = archive.find(PRESENTATION_RELS) {
        let rels_xml = archive.inflate(rels_entry)?;
        let relationships = relationships(&rels_xml, PRESENTATION_RELS)?;
        for slide_id in &slide_ids {
            if let Some(relationship) = relationships
                .iter()
                .find(|relationship| &relationship.id == slide_id && relationship.kind == "slide")
            {
                ordered.push(resolve_part_path("ppt", &relationship.target));
            }
        }
    }
    if ordered.is_empty() {
        let mut numbered: Vec<(u64, String)> = archive
            .entries()
            .iter()
            .filter_map(|entry| {
                let number = entry
                    .name
                    .strip_prefix("ppt/slides/slide")?
                    .strip_suffix(".xml")?
                    .parse()
                    .ok()?;
                Some((number, entry.name.clone()))
            })
            .collect();
        numbered.sort();
        ordered = numbered.into_iter().map(|(_, name)| name).collect();
    }
    Ok(ordered)
}

/// The `r:id` of a `p:sldId` (the relationship namespace's `id`, not the plain `id`).
fn relationship_id(element: &quick_xml::events::BytesStart<'_>) -> Option<String> {
    element
        .attributes()
        .flatten()
        .find(|attribute| {
            let key = attribute.key.as_ref();
            key.ends_with(b":id") && key != b"id"
        })
        .map(|attribute| String::from_utf8_lossy(&attribute.value).into_owned())
}

/// Caps the text of all slides and notes together, before normalization.
struct TextBudget {
    written: u64,
    max_bytes: u64,
}

impl TextBudget {
    fn new(max_text_bytes: u64) -> TextBudget {
        TextBudget {
            written: 0,
            max_bytes: max_text_bytes.saturating_mul(2),
        }
    }

    fn spend(&mut self, bytes: usize) -> Result<(), ExtractError> {
        self.written += bytes as u64;
        if self.written > self.max_bytes {
            return Err(ExtractError::TooLarge {
                detail: format!(
                    "presentation text exceeds {}",
                    human_bytes(self.max_bytes / 2)
                ),
            });
        }
        Ok(())
    }
}

/// Placeholders whose text is not content (slide number, date, footer, header, the slide
/// image on a notes page).
fn is_chrome_placeholder(kind: &str) -> bool {
    matches!(kind, "sldNum" | "dt" | "ftr" | "hdr" | "sldImg")
}

/// The text of a slide or notes part (DrawingML): `a:t` runs, `a:p` paragraphs, `a:br`
/// breaks, table rows and cells; the title placeholder's text between heading marks.
fn drawing_text(
    bytes: &[u8],
    part_name: &str,
    budget: &mut TextBudget,
) -> Result<String, ExtractError> {
    let mut reader = Reader::from_reader(bytes);
    let mut output = String::new();
    let mut in_text = false;
    // Inside a placeholder shape whose text is skipped: the depth of `p:sp` it started at.
    let mut skipped_shape: Option<usize> = None;
    let mut title_open = false;
    let mut shape_depth = 0usize;
    let mut cell_in_row = false;
    loop {
        let event = reader
            .read_event()
            .map_err(|error| not_well_formed(part_name, &error))?;
        match event {
            Event::Start(element) => match element.local_name().as_ref() {
                b"sp" => shape_depth += 1,
                b"t" => in_text = true,
                b"tr" => cell_in_row = false,
                b"tc" => {
                    if cell_in_row {
                        output.push_str(" | ");
                    }
                    cell_in_row = true;
                }
                b"ph" => placeholder(
                    &element,
                    shape_depth,
                    &mut skipped_shape,
                    &mut title_open,
                    &mut output,
                ),
                _ => {}
            },
            Event::Empty(element) => match element.local_name().as_ref() {
                b"br" => output.push('\n'),
                b"ph" => placeholder(
                    &element,
                    shape_depth,
                    &mut skipped_shape,
                    &mut title_open,
                    &mut output,
                ),
                _ => {}
            },
            Event::End(element) => match element.local_name().as_ref() {
                b"t" => in_text = false,
                b"p" => output.push('\n'),
                b"tr" => output.push('\n'),
                b"sp" => {
                    if title_open {
                        // Before the title's last paragraph break, so the mark stays on
                        // the title's line.
                        title_open = false;
                        let trimmed_length = output.trim_end_matches('\n').len();
                        output.insert(trimmed_length, HEADING_END_MARK);
                    }
                    if skipped_shape == Some(shape_depth) {
                        skipped_shape = None;
                    }
                    shape_depth = shape_depth.saturating_sub(1);
                    output.push_str("\n\n");
                }
                _ => {}
            },
            Event::Text(text) if in_text && skipped_shape.is_none() => {
                let decoded = text
                    .decode()
                    .map_err(|error| not_well_formed(part_name, &error))?;
                let clean = scrub_marks(&decoded);
                budget.spend(clean.len())?;
                output.push_str(&clean);
            }
            Event::GeneralRef(reference) if in_text && skipped_shape.is_none() => {
                if let Ok(Some(character)) = reference.resolve_char_ref() {
                    output.push(character);
                } else if let Ok(name) = reference.decode() {
                    output.push_str(match name.as_ref() {
                        "lt" => "<",
                        "gt" => ">",
                        "amp" => "&",
                        "apos" => "'",
                        "quot" => "\"",
                        _ => "",
                    });
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    Ok(output)
}

/// A `p:ph` element: a title placeholder opens a heading, a chrome placeholder skips its shape.
fn placeholder(
    element: &quick_xml::events::BytesStart<'_>,
    shape_depth: usize,
    skipped_shape: &mut Option<usize>,
    title_open: &mut bool,
    output: &mut String,
) {
    if shape_depth == 0 {
        return;
    }
    let kind = attribute(element, b"type").unwrap_or_default();
    if kind == "title" || kind == "ctrTitle" {
        *title_open = true;
        output.push(heading_start_mark(1));
    } else if is_chrome_placeholder(&kind) {
        *skipped_shape = Some(shape_depth);
    }
}
