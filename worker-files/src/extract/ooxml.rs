//! Small helpers shared by the XML readers of ZIP-based formats (DOCX, PPTX, XLSX, EPUB):
//! attribute values, OOXML relationship parts, and part paths inside the archive.
//!
//! Every reader uses quick-xml's streaming reader, which never reads a DTD and never
//! expands an entity other than the five predefined ones.

use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};

use super::ExtractError;

/// The value of the attribute whose local name is `name` (any prefix), with the predefined
/// entities and character references resolved; the raw text when it does not unescape.
pub(super) fn attribute(element: &BytesStart<'_>, name: &[u8]) -> Option<String> {
    let attribute = element
        .attributes()
        .flatten()
        .find(|attribute| attribute.key.local_name().as_ref() == name)?;
    let raw = String::from_utf8_lossy(&attribute.value);
    Some(match quick_xml::escape::unescape(&raw) {
        Ok(unescaped) => unescaped.into_owned(),
        Err(_) => raw.into_owned(),
    })
}

/// One relationship of an OOXML `_rels/*.rels` part.
pub(super) struct Relationship {
    pub id: String,
    /// The relationship type's last path segment (`slide`, `notesSlide`, `worksheet`, ...).
    pub kind: String,
    pub target: String,
}

/// The relationships of a `.rels` part.
pub(super) fn relationships(
    bytes: &[u8],
    part_name: &str,
) -> Result<Vec<Relationship>, ExtractError> {
    let mut reader = Reader::from_reader(bytes);
    let mut found = Vec::new();
    loop {
        match reader
            .read_event()
            .map_err(|error| not_well_formed(part_name, &error))?
        {
            Event::Start(element) | Event::Empty(element)
                if element.local_name().as_ref() == b"Relationship" =>
            {
                let (Some(id), Some(target)) =
                    (attribute(&element, b"Id"), attribute(&element, b"Target"))
                else {
                    continue;
                };
                if attribute(&element, b"TargetMode").as_deref() == Some("External") {
                    continue;
                }
                let kind = attribute(&element, b"Type")
                    .and_then(|kind| kind.rsplit('/').next().map(str::to_owned))
                    .unwrap_or_default();
                found.push(Relationship { id, kind, target });
            }
            Event::Eof => break,
            _ => {}
        }
    }
    Ok(found)
}

/// `corrupt`, naming the part.
pub(super) fn not_well_formed(part_name: &str, error: &dyn std::fmt::Display) -> ExtractError {
    ExtractError::Corrupt {
        detail: format!("part {part_name} is not well-formed XML: {error}"),
    }
}

/// The archive path of `target` as seen from the folder `base_folder` (`ppt/slides`):
/// absolute targets (`/ppt/...`) start at the archive root, `..` climbs, `%20` decodes.
pub(super) fn resolve_part_path(base_folder: &str, target: &str) -> String {
    let target = percent_decode(target);
    let mut segments: Vec<&str> = if target.starts_with('/') {
        Vec::new()
    } else {
        base_folder
            .split('/')
            .filter(|segment| !segment.is_empty())
            .collect()
    };
    for segment in target.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            other => segments.push(other),
        }
    }
    segments.join("/")
}

/// The folder of an archive path (`ppt/slides/slide1.xml` gives `ppt/slides`).
pub(super) fn folder_of(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(folder, _)| folder)
}

/// `%XX` escapes decoded (as UTF-8, invalid sequences replaced); a fragment (`#...`) dropped.
fn percent_decode(text: &str) -> String {
    let without_fragment = text.split('#').next().unwrap_or_default();
    let bytes = without_fragment.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut position = 0;
    while position < bytes.len() {
        if bytes[position] == b'%'
            && position + 2 < bytes.len()
            && let Ok(value) = u8::from_str_radix(
                std::str::from_utf8(&bytes[position + 1..position + 3]).unwrap_or("zz"),
                16,
            )
        {
            decoded.push(value);
            position += 3;
            continue;
        }
        decoded.push(bytes[position]);
        position += 1;
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_paths_resolve_like_the_package_does() {
        assert_eq!(
            resolve_part_path("ppt", "slides/slide1.xml"),
            "ppt/slides/slide1.xml"
        );
        assert_eq!(
            resolve_part_path("ppt/slides", "../notesSlides/notesSlide2.xml"),
            "ppt/notesSlides/notesSlide2.xml"
        );
        assert_eq!(
            resolve_part_path("xl", "/xl/worksheets/sheet1.xml"),
            "xl/worksheets/sheet1.xml"
        );
        assert_eq!(
            resolve_part_path("OEBPS", "Text/chapter%201.xhtml#top"),
            "OEBPS/Text/chapter 1.xhtml"
        );
        assert_eq!(resolve_part_path("", "../../etc/passwd"), "etc/passwd");
        assert_eq!(folder_of("content.opf"), "");
    }
}
