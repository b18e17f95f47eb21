//! EPUB: one page per chapter (each XHTML document of the spine, in reading order), each
//! read like HTML, so its `h1`–`h6` are its headings.
//!
//! `META-INF/container.xml` names the package document (OPF); its manifest maps ids to
//! files and its spine gives the order. Entries are inflated within the ZIP limits
//! ([`CheckedArchive`]). A book whose chapters are encrypted (DRM, listed in
//! `META-INF/encryption.xml`) is `encrypted`; obfuscated fonts alone are not.

use std::collections::HashMap;
use std::path::Path;

use quick_xml::Reader;
use quick_xml::events::Event;

use super::archive::CheckedArchive;
use super::ooxml::{attribute, folder_of, not_well_formed, resolve_part_path};
use super::{ExtractError, ExtractLimits, Page, text};

const CONTAINER: &str = "META-INF/container.xml";
const MIMETYPE: &str = "mimetype";
const ENCRYPTION: &str = "META-INF/encryption.xml";

pub(super) fn extract_epub(path: &Path, limits: &ExtractLimits) -> Result<Vec<Page>, ExtractError> {
    let mut archive = CheckedArchive::open(path, limits)?;
    if archive.find(CONTAINER).is_none() {
        return Err(ExtractError::UnsupportedType {
            detail: "zip archive that is not an EPUB (no META-INF/container.xml entry)".to_owned(),
        });
    }
    if let Some(entry) = archive.find(MIMETYPE) {
        let declared = archive.inflate(entry)?;
        if declared.trim_ascii() != b"application/epub+zip" {
            return Err(ExtractError::UnsupportedType {
                detail: "zip archive whose mimetype entry is not application/epub+zip".to_owned(),
            });
        }
    }
    let package_path = package_document(&archive.inflate_named(CONTAINER, "EPUB")?)?;
    let package = archive.inflate_named(&package_path, "EPUB")?;
    let chapters = spine_documents(&package, &package_path)?;
    if let Some(entry) = archive.find(ENCRYPTION) {
        let encryption = archive.inflate(entry)?;
        if let Some(encrypted) = encrypted_chapter(&encryption, &chapters)? {
            return Err(ExtractError::Encrypted {
                detail: format!("EPUB chapter {encrypted} is encrypted (DRM)"),
            });
        }
    }
    let mut pages = Vec::new();
    let mut text_bytes: u64 = 0;
    for (position, chapter_path) in chapters.iter().enumerate() {
        let entry = archive
            .find(chapter_path)
            .ok_or_else(|| ExtractError::Corrupt {
                detail: format!("EPUB spine lists {chapter_path}, which the archive lacks"),
            })?;
        let chapter = archive.inflate(entry)?;
        let marked = text::html_bytes_to_text(&chapter)?;
        let number = Some(u32::try_from(position + 1).unwrap_or(u32::MAX));
        let page = Page::with_marked_headings(number, &marked);
        text_bytes += page.text.len() as u64;
        if text_bytes > limits.max_text_bytes {
            return Err(ExtractError::TooLarge {
                detail: format!(
                    "EPUB text exceeds {} after {} chapter(s)",
                    super::error::human_bytes(limits.max_text_bytes),
                    position + 1
                ),
            });
        }
        if !page.text.is_empty() {
            pages.push(page);
        }
    }
    if pages.is_empty() {
        pages.push(Page::new(None, String::new()));
    }
    Ok(pages)
}

/// The package document's path, from the container's first `rootfile`.
fn package_document(container: &[u8]) -> Result<String, ExtractError> {
    let mut reader = Reader::from_reader(container);
    loop {
        match reader
            .read_event()
            .map_err(|error| not_well_formed(CONTAINER, &error))?
        {
            Event::Start(element) | Event::Empty(element)
                if element.local_name().as_ref() == b"rootfile" =>
            {
                if let Some(full_path) = attribute(&element, b"full-path") {
                    return Ok(resolve_part_path("", &full_path));
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    Err(ExtractError::Corrupt {
        detail: "EPUB container names no package document (rootfile)".to_owned(),
    })
}

/// The spine's XHTML documents, in reading order, as archive paths.
fn spine_documents(package: &[u8], package_path: &str) -> Result<Vec<String>, ExtractError> {
    let base = folder_of(package_path);
    let mut manifest: HashMap<String, (String, String)> = HashMap::new();
    let mut spine: Vec<String> = Vec::new();
    let mut reader = Reader::from_reader(package);
    loop {
        match reader
            .read_event()
            .map_err(|error| not_well_formed(package_path, &error))?
        {
            Event::Start(element) | Event::Empty(element) => match element.local_name().as_ref() {
                b"item" => {
                    if let (Some(id), Some(href)) =
                        (attribute(&element, b"id"), attribute(&element, b"href"))
                    {
                        let media_type = attribute(&element, b"media-type").unwrap_or_default();
                        manifest.insert(id, (resolve_part_path(base, &href), media_type));
                    }
                }
                b"itemref" => {
                    if let Some(idref) = attribute(&element, b"idref") {
                        spine.push(idref);
                    }
                }
                _ => {}
            },
            Event::Eof => break,
            _ => {}
        }
    }
    Ok(spine
        .into_iter()
        .filter_map(|idref| {
            let (path, media_type) = manifest.get(&idref)?;
            let is_document = media_type.contains("html") || media_type.is_empty();
            is_document.then(|| path.clone())
        })
        .collect())
}

/// The first chapter that `encryption.xml` lists as encrypted (fonts do not count).
fn encrypted_chapter(
    encryption: &[u8],
    chapters: &[String],
) -> Result<Option<String>, ExtractError> {
    let mut reader = Reader::from_reader(encryption);
    loop {
        match reader
            .read_event()
            .map_err(|error| not_well_formed(ENCRYPTION, &error))?
        {
            Event::Start(element) | Event::Empty(element)
                if element.local_name().as_ref() == b"CipherReference" =>
            {
                let Some(uri) = attribute(&element, b"URI") else {
                    continue;
                };
                let path = resolve_part_path("", &uri);
                if chapters.contains(&path) {
                    return Ok(Some(path));
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    Ok(None)
}
