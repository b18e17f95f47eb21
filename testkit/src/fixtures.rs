//! Document fixtures, generated on demand so no binary file is ever committed.
//!
//! Valid documents ([`pdf_from_pages`], [`docx_from_paragraphs`]) round-trip their text through the
//! extractors; the hostile ones each provoke one extraction error code:
//!
//! | fixture | code |
//! |---|---|
//! | [`truncated_pdf`] | `corrupt` |
//! | [`encrypted_pdf`], [`encrypted_pdf_empty_user_password`] | `encrypted` |
//! | [`random_bytes`] | `unsupported_type` |
//! | [`zip_bomb`], [`zip_bomb_lying_sizes`] | `zip_bomb` |
//! | [`zip_not_docx`] | `unsupported_type` |
//! | [`hostile_pdf`] | `extract_crashed` (stack overflow; in-process it aborts the caller) |
//! | [`looping_pdf`] | `extract_timeout` (endless loop; in-process it hangs the caller) |
//! | [`panicking_pdf`] | `extract_crashed` (pdf-extract panics) |
//! | [`pdf_flate_bomb`] | `extract_crashed` under a child memory limit below 128 MiB |
//! | [`docx_image_only`] | `empty_text` |
//!
//! The DOCX builders [`docx_minimal`], [`docx_every_part`] and [`docx_with_entities`] write the XML by
//! hand, so a test controls every part; [`one_long_line`] and [`deeply_nested_html`] are the inputs that
//! used to be slower than linear.
//!
//! Every function is pure and deterministic, and panics only on a bug in the fixture itself.

use std::io::{Cursor, Write};

use lopdf::content::{Content, Operation};
use lopdf::{
    Dictionary, Document, EncryptionState, EncryptionVersion, Object, ObjectId, Permissions,
    Stream, StringFormat, dictionary,
};

/// Letter-size page, in points.
const PAGE_WIDTH: f32 = 612.0;
const PAGE_HEIGHT: f32 = 792.0;
const MARGIN: f32 = 72.0;
const FONT_SIZE: f32 = 11.0;
const LEADING: f32 = 14.0;
/// Helvetica at 11 pt fits about 85 average characters on 468 pt; stay below.
const WRAP_COLUMNS: usize = 80;

/// A valid PDF with one page per entry of `pages`, in Helvetica (standard Type1 font, WinAnsi encoding).
///
/// Within a page, `\n` starts a new line and an empty line leaves a blank line (a paragraph break); long
/// lines wrap at about 80 characters. Pages with more lines than fit get a smaller font. Characters outside
/// WinAnsi become `?`. Both pdf-extract and pdftotext read the text back.
pub fn pdf_from_pages(pages: &[&str]) -> Vec<u8> {
    let mut document = build_text_pdf(pages);
    save(&mut document)
}

/// The document behind [`pdf_from_pages`], before saving.
fn build_text_pdf(pages: &[&str]) -> Document {
    let mut document = Document::with_version("1.5");
    let pages_id = document.new_object_id();
    let font_id = document.add_object(helvetica());
    let resources_id = document.add_object(dictionary! {
        "Font" => dictionary! { "F1" => font_id },
    });
    let mut kids = Vec::with_capacity(pages.len());
    for page_text in pages {
        let content_id =
            document.add_object(Stream::new(Dictionary::new(), page_content(page_text)));
        let page_id = document.add_object(dictionary! {
            "Type" => "Page",
            "Parent" => pages_id,
            "Contents" => content_id,
        });
        kids.push(Object::Reference(page_id));
    }
    let page_count = i64::try_from(kids.len()).expect("page count fits i64");
    document.objects.insert(
        pages_id,
        Object::Dictionary(dictionary! {
            "Type" => "Pages",
            "Kids" => kids,
            "Count" => page_count,
            "Resources" => resources_id,
            "MediaBox" => media_box(),
        }),
    );
    finish_catalog(&mut document, pages_id);
    document
}

fn helvetica() -> Dictionary {
    dictionary! {
        "Type" => "Font",
        "Subtype" => "Type1",
        "BaseFont" => "Helvetica",
        "Encoding" => "WinAnsiEncoding",
    }
}

fn media_box() -> Vec<Object> {
    vec![0.into(), 0.into(), PAGE_WIDTH.into(), PAGE_HEIGHT.into()]
}

fn finish_catalog(document: &mut Document, pages_id: ObjectId) {
    let catalog_id = document.add_object(dictionary! {
        "Type" => "Catalog",
        "Pages" => pages_id,
    });
    document.trailer.set("Root", catalog_id);
    // A file identifier: required by the standard security handler, harmless otherwise.
    let file_id = Object::String(b"glassbox-fixture".to_vec(), StringFormat::Hexadecimal);
    document.trailer.set("ID", vec![file_id.clone(), file_id]);
}

fn save(document: &mut Document) -> Vec<u8> {
    document.compress();
    let mut bytes = Vec::new();
    document
        .save_to(&mut bytes)
        .expect("writing a PDF to memory cannot fail");
    bytes
}

/// The content stream of one page: wrapped lines, top to bottom.
fn page_content(page_text: &str) -> Vec<u8> {
    let lines = wrap_lines(page_text);
    let available_height = PAGE_HEIGHT - 2.0 * MARGIN;
    let needed_height = lines.len() as f32 * LEADING;
    let scale = if needed_height > available_height {
        available_height / needed_height
    } else {
        1.0
    };
    let font_size = FONT_SIZE * scale;
    let leading = LEADING * scale;

    let mut operations = vec![
        Operation::new("BT", vec![]),
        Operation::new("Tf", vec!["F1".into(), font_size.into()]),
        Operation::new("TL", vec![leading.into()]),
        Operation::new("Td", vec![MARGIN.into(), (PAGE_HEIGHT - MARGIN).into()]),
    ];
    for line in lines {
        if !line.is_empty() {
            operations.push(Operation::new(
                "Tj",
                vec![Object::String(win_ansi(&line), StringFormat::Literal)],
            ));
        }
        operations.push(Operation::new("T*", vec![]));
    }
    operations.push(Operation::new("ET", vec![]));
    Content { operations }
        .encode()
        .expect("encoding a content stream cannot fail")
}

/// Splits on `\n` and wraps long lines at word boundaries (a longer word gets a line of its own).
fn wrap_lines(page_text: &str) -> Vec<String> {
    let mut lines = Vec::new();
    for source_line in page_text.lines() {
        let mut current = String::new();
        for word in source_line.split_whitespace() {
            if !current.is_empty()
                && current.chars().count() + 1 + word.chars().count() > WRAP_COLUMNS
            {
                lines.push(std::mem::take(&mut current));
            }
            if !current.is_empty() {
                current.push(' ');
            }
            current.push_str(word);
        }
        lines.push(current);
    }
    lines
}

/// Encodes text in WinAnsi (Windows-1252); unmappable characters become `?`.
fn win_ansi(text: &str) -> Vec<u8> {
    text.chars()
        .map(|character| match character {
            ' '..='~' => character as u8,
            '\u{A0}'..='\u{FF}' => u8::try_from(u32::from(character)).unwrap_or(b'?'),
            '€' => 0x80,
            '…' => 0x85,
            '‘' => 0x91,
            '’' => 0x92,
            '“' => 0x93,
            '”' => 0x94,
            '•' => 0x95,
            '–' => 0x96,
            '—' => 0x97,
            '™' => 0x99,
            _ => b'?',
        })
        .collect()
}

/// A valid DOCX with one paragraph per entry, built with docx-rs.
pub fn docx_from_paragraphs(paragraphs: &[&str]) -> Vec<u8> {
    let mut docx = docx_rs::Docx::new();
    for paragraph_text in paragraphs {
        docx = docx.add_paragraph(
            docx_rs::Paragraph::new().add_run(docx_rs::Run::new().add_text(*paragraph_text)),
        );
    }
    let mut cursor = Cursor::new(Vec::new());
    docx.build()
        .pack(&mut cursor)
        .expect("packing a DOCX in memory cannot fail");
    cursor.into_inner()
}

/// A valid two-page PDF cut in half: no cross-reference table, no trailer, so lopdf refuses it.
pub fn truncated_pdf() -> Vec<u8> {
    let mut bytes = pdf_from_pages(&[
        "This document was cut in half during the upload.",
        "The second page never arrived.",
    ]);
    bytes.truncate(bytes.len() / 2);
    bytes
}

/// A genuinely encrypted PDF (standard security handler, RC4 128-bit, revision 3) with user password
/// `glassbox-user` and owner password `glassbox-owner`.
pub fn encrypted_pdf() -> Vec<u8> {
    encrypted_text_pdf("glassbox-user")
}

/// An encrypted PDF whose user password is empty: any reader opens it without asking, lopdf decrypts it
/// silently on load. Still rejected as `encrypted` in v1.
pub fn encrypted_pdf_empty_user_password() -> Vec<u8> {
    encrypted_text_pdf("")
}

fn encrypted_text_pdf(user_password: &str) -> Vec<u8> {
    let mut document = build_text_pdf(&["Confidential: the quarterly numbers are encrypted."]);
    let version = EncryptionVersion::V2 {
        document: &document,
        owner_password: "glassbox-owner",
        user_password,
        key_length: 128,
        permissions: Permissions::all(),
    };
    let state = EncryptionState::try_from(version).expect("RC4 encryption state for a fixture");
    document.encrypt(&state).expect("encrypting a fixture PDF");
    let mut bytes = Vec::new();
    document
        .save_to(&mut bytes)
        .expect("writing a PDF to memory cannot fail");
    bytes
}

/// `len` pseudo-random bytes, the same for the same `seed`.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    use rand::{RngCore, SeedableRng};
    let mut generator = rand::rngs::StdRng::seed_from_u64(seed);
    let mut bytes = vec![0_u8; len];
    generator.fill_bytes(&mut bytes);
    bytes
}

/// Size `word/document.xml` of [`zip_bomb`] inflates to.
pub const ZIP_BOMB_INFLATED_BYTES: u64 = 512 * 1024 * 1024;

/// A ZIP with DOCX entry names whose `word/document.xml` inflates to 512 MiB of zeros (honestly declared),
/// about 0.5 MiB on disk (ratio about 1000:1). The declared size alone exceeds the default limits.
pub fn zip_bomb() -> Vec<u8> {
    let mut archive = DeflatedZip::new();
    archive.add("[Content_Types].xml", CONTENT_TYPES_XML.as_bytes());
    archive.add("_rels/.rels", ROOT_RELS_XML.as_bytes());
    archive.add_zeros("word/document.xml", ZIP_BOMB_INFLATED_BYTES);
    archive.finish()
}

/// Like [`zip_bomb`] but 64 MiB of zeros, and both the local header and the central directory claim
/// `word/document.xml` is 4 KiB: the declared sizes and the ratio look harmless, only a reader that caps
/// inflation at the declared size catches it.
pub fn zip_bomb_lying_sizes() -> Vec<u8> {
    let mut archive = DeflatedZip::new();
    archive.add("[Content_Types].xml", CONTENT_TYPES_XML.as_bytes());
    archive.add("_rels/.rels", ROOT_RELS_XML.as_bytes());
    archive.add_zeros("word/document.xml", 64 * 1024 * 1024);
    let mut bytes = archive.finish();
    let claimed_size: u32 = 4096;
    patch_declared_size(&mut bytes, b"word/document.xml", claimed_size);
    bytes
}

/// The smallest DOCX Word opens: `[Content_Types].xml`, `_rels/.rels` and `word/document.xml` holding
/// `body_xml` inside `<w:body>` (no styles, settings, fonts or document relationships).
pub fn docx_minimal(body_xml: &str) -> Vec<u8> {
    let document = wordprocessing_part("document", &format!("<w:body>{body_xml}</w:body>"));
    docx_from_parts(&[("word/document.xml", &document)])
}

/// [`docx_minimal`] with one plain paragraph per entry.
pub fn docx_minimal_paragraphs(paragraphs: &[&str]) -> Vec<u8> {
    let body: String = paragraphs.iter().map(|text| paragraph_xml(text)).collect();
    docx_minimal(&body)
}

/// A minimal DOCX whose only content is an inline picture (and the file it shows): no text at all,
/// so `empty_text`.
pub fn docx_image_only() -> Vec<u8> {
    let drawing = r#"<w:p><w:r><w:drawing><wp:inline><wp:extent cx="952500" cy="952500"/><wp:docPr id="1" name="Picture 1"/><a:graphic><a:graphicData uri="http://schemas.openxmlformats.org/drawingml/2006/picture"><pic:pic><pic:nvPicPr><pic:cNvPr id="0" name="image1.png"/><pic:cNvPicPr/></pic:nvPicPr><pic:blipFill><a:blip r:embed="rId1"/></pic:blipFill><pic:spPr/></pic:pic></a:graphicData></a:graphic></wp:inline></w:drawing></w:r></w:p>"#;
    let relationships = r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/image" Target="media/image1.png"/></Relationships>"#;
    let document = wordprocessing_part("document", &format!("<w:body>{drawing}</w:body>"));
    docx_from_parts(&[
        ("word/document.xml", &document),
        ("word/_rels/document.xml.rels", relationships),
        ("word/media/image1.png", "not really an image"),
    ])
}

/// A DOCX with text in every part that holds some, each marked with its label so a test can check
/// where it was read and that nothing is read twice: body paragraph `BODY-TEXT`, table cells
/// `TABLE-CELL-A` / `TABLE-CELL-B`, a text box `TEXT-BOX-TEXT` (drawn as Word does: once in
/// `mc:Choice`, once again in `mc:Fallback` for old readers), a deleted tracked change `DELETED-TEXT`
/// (must not be read), `HEADER-TEXT`, `FOOTER-TEXT`, `FOOTNOTE-TEXT`, `ENDNOTE-TEXT` and `COMMENT-TEXT`.
pub fn docx_every_part() -> Vec<u8> {
    let text_box = |text: &str| {
        let content = paragraph_xml(text);
        format!(
            r#"<w:p><w:r><mc:AlternateContent><mc:Choice Requires="wps"><w:drawing><wp:anchor><wp:docPr id="2" name="Text Box 2"/><a:graphic><a:graphicData uri="http://schemas.microsoft.com/office/word/2010/wordprocessingShape"><wps:wsp><wps:txbx><w:txbxContent>{content}</w:txbxContent></wps:txbx></wps:wsp></a:graphicData></a:graphic></wp:anchor></w:drawing></mc:Choice><mc:Fallback><w:pict><v:shape><v:textbox><w:txbxContent>{content}</w:txbxContent></v:textbox></v:shape></w:pict></mc:Fallback></mc:AlternateContent></w:r></w:p>"#
        )
    };
    let body = format!(
        r#"{}<w:tbl><w:tr><w:tc>{}</w:tc><w:tc>{}</w:tc></w:tr></w:tbl>{}<w:p><w:r><w:t xml:space="preserve">See note </w:t></w:r><w:r><w:footnoteReference w:id="1"/></w:r><w:del w:id="9" w:author="a"><w:r><w:delText>DELETED-TEXT</w:delText></w:r></w:del><w:commentRangeStart w:id="0"/><w:r><w:t>commented</w:t></w:r><w:commentRangeEnd w:id="0"/><w:r><w:commentReference w:id="0"/></w:r></w:p>"#,
        paragraph_xml("BODY-TEXT"),
        paragraph_xml("TABLE-CELL-A"),
        paragraph_xml("TABLE-CELL-B"),
        text_box("TEXT-BOX-TEXT"),
    );
    let notes = |kind: &str, text: &str| {
        let note = paragraph_xml(text);
        wordprocessing_part(
            &format!("{kind}s"),
            &format!(
                r#"<w:{kind} w:type="separator" w:id="-1"><w:p><w:r><w:separator/></w:r></w:p></w:{kind}><w:{kind} w:id="1">{note}</w:{kind}>"#
            ),
        )
    };
    let comment = format!(
        r#"<w:comment w:id="0" w:author="a">{}</w:comment>"#,
        paragraph_xml("COMMENT-TEXT")
    );
    docx_from_parts(&[
        (
            "word/document.xml",
            &wordprocessing_part("document", &format!("<w:body>{body}</w:body>")),
        ),
        (
            "word/header1.xml",
            &wordprocessing_part("hdr", &paragraph_xml("HEADER-TEXT")),
        ),
        (
            "word/footer1.xml",
            &wordprocessing_part("ftr", &paragraph_xml("FOOTER-TEXT")),
        ),
        ("word/footnotes.xml", &notes("footnote", "FOOTNOTE-TEXT")),
        ("word/endnotes.xml", &notes("endnote", "ENDNOTE-TEXT")),
        (
            "word/comments.xml",
            &wordprocessing_part("comments", &comment),
        ),
    ])
}

/// A minimal DOCX whose `word/document.xml` declares a DTD with a billion-laughs entity chain and an
/// external entity (`SYSTEM "file:///etc/passwd"`), and references both in the text. A reader that
/// expanded them would balloon or read a local file; ours leaves `&lol9;` and `&xxe;` as literal text.
pub fn docx_with_entities() -> Vec<u8> {
    let mut dtd = String::from("<!DOCTYPE w:document [\n<!ENTITY lol \"lol\">\n");
    for level in 1..=9 {
        let previous = if level == 1 {
            "lol".to_owned()
        } else {
            format!("lol{}", level - 1)
        };
        let expansion = format!("&{previous};").repeat(10);
        dtd.push_str(&format!("<!ENTITY lol{level} \"{expansion}\">\n"));
    }
    dtd.push_str("<!ENTITY xxe SYSTEM \"file:///etc/passwd\">\n]>");
    let document = format!(
        r#"<?xml version="1.0" encoding="UTF-8" standalone="no"?>
{dtd}
<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"><w:body><w:p><w:r><w:t>Entities stay literal: &lol9; and &xxe; &amp; &#233;</w:t></w:r></w:p></w:body></w:document>"#
    );
    docx_from_parts(&[("word/document.xml", &document)])
}

const WORDPROCESSING_NAMESPACES: &str = r#"xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main" xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships" xmlns:wp="http://schemas.openxmlformats.org/drawingml/2006/wordprocessingDrawing" xmlns:a="http://schemas.openxmlformats.org/drawingml/2006/main" xmlns:pic="http://schemas.openxmlformats.org/drawingml/2006/picture" xmlns:mc="http://schemas.openxmlformats.org/markup-compatibility/2006" xmlns:wps="http://schemas.microsoft.com/office/word/2010/wordprocessingShape" xmlns:v="urn:schemas-microsoft-com:vml" mc:Ignorable="wps""#;

/// A WordprocessingML part: `<w:{root} …namespaces…>{content}</w:{root}>`.
fn wordprocessing_part(root: &str, content: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"yes\"?>\n<w:{root} {WORDPROCESSING_NAMESPACES}>{content}</w:{root}>"
    )
}

fn paragraph_xml(text: &str) -> String {
    let escaped = text
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    format!("<w:p><w:r><w:t xml:space=\"preserve\">{escaped}</w:t></w:r></w:p>")
}

/// A ZIP with `[Content_Types].xml`, `_rels/.rels` and the given parts.
fn docx_from_parts(parts: &[(&str, &str)]) -> Vec<u8> {
    let mut archive = DeflatedZip::new();
    archive.add("[Content_Types].xml", CONTENT_TYPES_XML.as_bytes());
    archive.add("_rels/.rels", ROOT_RELS_XML.as_bytes());
    for (name, content) in parts {
        archive.add(name, content.as_bytes());
    }
    archive.finish()
}

/// One line of `bytes` bytes of words separated by single spaces: no sentence end, no line break.
pub fn one_long_line(bytes: usize) -> Vec<u8> {
    const WORDS: [&str; 8] = [
        "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel",
    ];
    let mut line = Vec::with_capacity(bytes + 16);
    let mut index = 0;
    while line.len() < bytes {
        line.extend_from_slice(WORDS[index % WORDS.len()].as_bytes());
        line.push(b' ');
        index += 1;
    }
    line.truncate(bytes);
    line
}

/// An HTML page of about `bytes` bytes whose text sits under `<div>`s nested as deep as they fit.
pub fn deeply_nested_html(bytes: usize) -> Vec<u8> {
    let depth = bytes.saturating_sub(200) / ("<div>".len() + "</div>".len());
    let mut html = String::with_capacity(bytes + 200);
    html.push_str("<!DOCTYPE html><html><body>");
    html.push_str(&"<div>".repeat(depth));
    html.push_str("The text at the bottom of a very deep tree.");
    html.push_str(&"</div>".repeat(depth));
    html.push_str("</body></html>");
    html.into_bytes()
}

/// A valid ZIP with no `word/document.xml`.
pub fn zip_not_docx() -> Vec<u8> {
    let mut archive = DeflatedZip::new();
    archive.add(
        "README.txt",
        b"Just an ordinary archive, not a Word document.\n",
    );
    archive.add("data/numbers.csv", b"a,b\n1,2\n");
    archive.finish()
}

const CONTENT_TYPES_XML: &str = r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"><Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/><Default Extension="xml" ContentType="application/xml"/><Override PartName="/word/document.xml" ContentType="application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"/></Types>"#;

const ROOT_RELS_XML: &str = r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" Target="word/document.xml"/></Relationships>"#;

/// A small wrapper around the zip writer: deflated entries at level 6 (about 1000:1 on zeros, 0.15 s for
/// 512 MiB; level 1 only reaches 100:1).
struct DeflatedZip {
    writer: zip::ZipWriter<Cursor<Vec<u8>>>,
}

impl DeflatedZip {
    fn new() -> Self {
        DeflatedZip {
            writer: zip::ZipWriter::new(Cursor::new(Vec::new())),
        }
    }

    fn options() -> zip::write::SimpleFileOptions {
        zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .compression_level(Some(6))
    }

    fn add(&mut self, name: &str, content: &[u8]) {
        self.writer
            .start_file(name, Self::options())
            .expect("zip entry");
        self.writer.write_all(content).expect("zip entry content");
    }

    fn add_zeros(&mut self, name: &str, total_bytes: u64) {
        self.writer
            .start_file(name, Self::options().large_file(false))
            .expect("zip entry");
        let chunk = vec![0_u8; 1024 * 1024];
        let mut remaining = total_bytes;
        while remaining > 0 {
            let chunk_len =
                usize::try_from(remaining.min(chunk.len() as u64)).expect("chunk fits usize");
            self.writer
                .write_all(&chunk[..chunk_len])
                .expect("zip entry content");
            remaining -= chunk_len as u64;
        }
    }

    fn finish(self) -> Vec<u8> {
        self.writer
            .finish()
            .expect("finishing a zip in memory")
            .into_inner()
    }
}

/// Rewrites the uncompressed-size field of `entry_name` in its local header and its central directory
/// record. Offsets follow the ZIP specification (APPNOTE 4.3.7 and 4.3.12).
fn patch_declared_size(bytes: &mut [u8], entry_name: &[u8], claimed_size: u32) {
    const LOCAL_SIGNATURE: &[u8] = b"PK\x03\x04";
    const CENTRAL_SIGNATURE: &[u8] = b"PK\x01\x02";
    let mut patched_records = 0;
    for offset in 0..bytes.len().saturating_sub(46) {
        let (size_field, name_field) = if bytes[offset..].starts_with(LOCAL_SIGNATURE) {
            (offset + 22, offset + 30)
        } else if bytes[offset..].starts_with(CENTRAL_SIGNATURE) {
            (offset + 24, offset + 46)
        } else {
            continue;
        };
        if bytes[name_field..].starts_with(entry_name) {
            bytes[size_field..size_field + 4].copy_from_slice(&claimed_size.to_le_bytes());
            patched_records += 1;
        }
    }
    assert_eq!(
        patched_records, 2,
        "expected one local header and one central record for the entry"
    );
}

/// A PDF whose page content nests 100,000 arrays (`[[[...]]] TJ`), compressed to a few hundred bytes.
///
/// lopdf's content parser recurses once per nesting level without a depth limit, so pdf-extract overflows
/// the stack of whatever thread runs it and the process aborts (SIGABRT after Rust's stack overflow
/// handler); no `catch_unwind` can stop that. Isolated extraction turns it into `extract_crashed`.
pub fn hostile_pdf() -> Vec<u8> {
    const NESTING: usize = 100_000;
    let mut content = b"BT /F1 12 Tf 72 720 Td ".to_vec();
    content.extend(std::iter::repeat_n(b'[', NESTING));
    content.extend(std::iter::repeat_n(b']', NESTING));
    content.extend_from_slice(b" TJ ET");
    let mut document = one_page_pdf(content, true);
    save(&mut document)
}

/// A PDF whose only page names itself as its `/Parent` and has neither `/Resources` nor `/MediaBox`.
///
/// pdf-extract 0.9 looks up inherited page attributes by following `/Parent` without a cycle check. The
/// optimiser turns that recursion into a loop, so extraction spins forever: `extract_timeout` once the
/// child's CPU limit hits.
pub fn looping_pdf() -> Vec<u8> {
    let mut document = Document::with_version("1.5");
    let pages_id = document.new_object_id();
    let page_id = document.new_object_id();
    let content_id = document.add_object(Stream::new(
        Dictionary::new(),
        b"BT /F1 12 Tf 72 720 Td (This page is its own parent.) Tj ET".to_vec(),
    ));
    document.objects.insert(
        page_id,
        Object::Dictionary(dictionary! {
            "Type" => "Page",
            "Parent" => page_id,
            "Contents" => content_id,
        }),
    );
    document.objects.insert(
        pages_id,
        Object::Dictionary(dictionary! {
            "Type" => "Pages",
            "Kids" => vec![Object::Reference(page_id)],
            "Count" => 1,
        }),
    );
    finish_catalog(&mut document, pages_id);
    save(&mut document)
}

/// One page with the given content stream and a Helvetica font; with `with_media_box` false the page
/// tree has no `/MediaBox` at all.
fn one_page_pdf(content: Vec<u8>, with_media_box: bool) -> Document {
    let mut document = Document::with_version("1.5");
    let pages_id = document.new_object_id();
    let font_id = document.add_object(helvetica());
    let content_id = document.add_object(Stream::new(Dictionary::new(), content));
    let mut page = dictionary! {
        "Type" => "Page",
        "Parent" => pages_id,
        "Contents" => content_id,
        "Resources" => dictionary! { "Font" => dictionary! { "F1" => font_id } },
    };
    if with_media_box {
        page.set("MediaBox", media_box());
    }
    let page_id = document.add_object(page);
    document.objects.insert(
        pages_id,
        Object::Dictionary(dictionary! {
            "Type" => "Pages",
            "Kids" => vec![Object::Reference(page_id)],
            "Count" => 1,
        }),
    );
    finish_catalog(&mut document, pages_id);
    document
}

/// A PDF whose page has no `/MediaBox` anywhere in its page tree: pdf-extract 0.9 panics
/// (`expect("MediaBox")`), which must surface as `extract_crashed` with the panic message. pdfium, like
/// every viewer, falls back to a letter-size page and reads it.
pub fn panicking_pdf() -> Vec<u8> {
    let mut document = one_page_pdf(
        b"BT /F1 12 Tf 72 720 Td (No media box here.) Tj ET".to_vec(),
        false,
    );
    save(&mut document)
}

/// Bytes the page content of [`pdf_flate_bomb`] inflates to.
pub const PDF_FLATE_BOMB_INFLATED_BYTES: usize = 128 * 1024 * 1024;

/// A one-page PDF whose content stream is valid (a text object padded with spaces) but inflates from
/// about 0.1 MiB to 128 MiB. Under a child memory limit below that, the allocation fails and the child
/// aborts: `extract_crashed` ("out of memory").
pub fn pdf_flate_bomb() -> Vec<u8> {
    let mut content = b"BT /F1 12 Tf 72 720 Td (Mostly padding.) Tj ET".to_vec();
    content.resize(PDF_FLATE_BOMB_INFLATED_BYTES, b' ');
    let mut document = one_page_pdf(content, true);
    save(&mut document)
}

/// A ZIP (deflated) holding `entries` as given: the building block of the PPTX, XLSX and EPUB
/// fixtures, and of hostile variants of them.
pub fn zip_from_entries(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut archive = DeflatedZip::new();
    for (name, content) in entries {
        archive.add(name, content);
    }
    archive.finish()
}

/// `entries` plus `bomb_entry`: 512 MiB of zeros (about 500 KiB deflated), `zip_bomb` like [`zip_bomb`].
pub fn zip_bomb_with(entries: &[(&str, &[u8])], bomb_entry: &str) -> Vec<u8> {
    let mut archive = DeflatedZip::new();
    for (name, content) in entries {
        archive.add(name, content);
    }
    archive.add_zeros(bomb_entry, ZIP_BOMB_INFLATED_BYTES);
    archive.finish()
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The entries of a PPTX with one slide per `(title, body, notes)`, written by hand: the
/// presentation lists the slides in the given order through its relationships (the slide
/// files are numbered in reverse, so only a reader that follows `p:sldIdLst` gets the order
/// right), each slide has a title placeholder, a body shape and a slide-number placeholder
/// (whose text is not content), and notes when given.
pub fn pptx_entries(slides: &[(&str, &str, Option<&str>)]) -> Vec<(String, Vec<u8>)> {
    const P_NS: &str = r#"xmlns:a="http://schemas.openxmlformats.org/drawingml/2006/main" xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships" xmlns:p="http://schemas.openxmlformats.org/presentationml/2006/main""#;
    let shape = |placeholder: &str, text: &str| {
        let paragraphs: String = text
            .split('\n')
            .map(|line| format!("<a:p><a:r><a:t>{}</a:t></a:r></a:p>", xml_escape(line)))
            .collect();
        format!(
            r#"<p:sp><p:nvSpPr><p:cNvPr id="2" name="shape"/><p:cNvSpPr/><p:nvPr>{placeholder}</p:nvPr></p:nvSpPr><p:spPr/><p:txBody><a:bodyPr/>{paragraphs}</p:txBody></p:sp>"#
        )
    };
    let mut entries: Vec<(String, Vec<u8>)> = Vec::new();
    let mut slide_list = String::new();
    let mut presentation_rels = String::new();
    let count = slides.len();
    for (position, (title, body, notes)) in slides.iter().enumerate() {
        let file_number = count - position;
        let relationship_id = format!("rId{}", position + 10);
        slide_list.push_str(&format!(
            r#"<p:sldId id="{}" r:id="{relationship_id}"/>"#,
            256 + position
        ));
        presentation_rels.push_str(&format!(
            r#"<Relationship Id="{relationship_id}" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/slide" Target="slides/slide{file_number}.xml"/>"#
        ));
        let slide_xml = format!(
            r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?><p:sld {P_NS}><p:cSld><p:spTree>{}{}{}</p:spTree></p:cSld></p:sld>"#,
            shape(r#"<p:ph type="title"/>"#, title),
            shape(r#"<p:ph idx="1"/>"#, body),
            shape(
                r#"<p:ph type="sldNum" idx="12"/>"#,
                &format!("{}", position + 1)
            ),
        );
        entries.push((
            format!("ppt/slides/slide{file_number}.xml"),
            slide_xml.into_bytes(),
        ));
        if let Some(notes) = notes {
            let notes_xml = format!(
                r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?><p:notes {P_NS}><p:cSld><p:spTree>{}{}</p:spTree></p:cSld></p:notes>"#,
                shape(r#"<p:ph type="sldImg"/>"#, ""),
                shape(r#"<p:ph type="body" idx="1"/>"#, notes),
            );
            entries.push((
                format!("ppt/notesSlides/notesSlide{file_number}.xml"),
                notes_xml.into_bytes(),
            ));
            entries.push((
                format!("ppt/slides/_rels/slide{file_number}.xml.rels"),
                format!(
                    r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Id="rId2" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/notesSlide" Target="../notesSlides/notesSlide{file_number}.xml"/></Relationships>"#
                )
                .into_bytes(),
            ));
        }
    }
    entries.push((
        "ppt/presentation.xml".to_owned(),
        format!(
            r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?><p:presentation {P_NS}><p:sldIdLst>{slide_list}</p:sldIdLst></p:presentation>"#
        )
        .into_bytes(),
    ));
    entries.push((
        "ppt/_rels/presentation.xml.rels".to_owned(),
        format!(
            r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">{presentation_rels}</Relationships>"#
        )
        .into_bytes(),
    ));
    entries
}

/// A PPTX (see [`pptx_entries`]).
pub fn pptx_from_slides(slides: &[(&str, &str, Option<&str>)]) -> Vec<u8> {
    zip_of(&pptx_entries(slides))
}

/// The entries of an XLSX with one sheet per `(name, rows)`: strings go through the shared
/// string table, except cells that parse as numbers; a cell left empty is skipped (its
/// neighbours keep their column letters).
pub fn xlsx_entries(sheets: &[(&str, &[&[&str]])]) -> Vec<(String, Vec<u8>)> {
    let mut shared_strings: Vec<String> = Vec::new();
    let mut entries: Vec<(String, Vec<u8>)> = Vec::new();
    let mut sheet_list = String::new();
    let mut workbook_rels = String::new();
    for (sheet_position, (name, rows)) in sheets.iter().enumerate() {
        let sheet_number = sheet_position + 1;
        let mut sheet_rows = String::new();
        for (row_position, row) in rows.iter().enumerate() {
            let row_number = row_position + 1;
            let mut cells = String::new();
            for (column, value) in row.iter().enumerate() {
                if value.is_empty() {
                    continue;
                }
                let reference = format!("{}{row_number}", (b'A' + column as u8) as char);
                if value.parse::<f64>().is_ok() {
                    cells.push_str(&format!(r#"<c r="{reference}"><v>{value}</v></c>"#));
                } else {
                    shared_strings.push(xml_escape(value));
                    cells.push_str(&format!(
                        r#"<c r="{reference}" t="s"><v>{}</v></c>"#,
                        shared_strings.len() - 1
                    ));
                }
            }
            sheet_rows.push_str(&format!(r#"<row r="{row_number}">{cells}</row>"#));
        }
        entries.push((
            format!("xl/worksheets/sheet{sheet_number}.xml"),
            format!(
                r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?><worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><sheetData>{sheet_rows}</sheetData></worksheet>"#
            )
            .into_bytes(),
        ));
        sheet_list.push_str(&format!(
            r#"<sheet name="{}" sheetId="{sheet_number}" r:id="rId{sheet_number}"/>"#,
            xml_escape(name)
        ));
        workbook_rels.push_str(&format!(
            r#"<Relationship Id="rId{sheet_number}" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/worksheet" Target="worksheets/sheet{sheet_number}.xml"/>"#
        ));
    }
    let strings: String = shared_strings
        .iter()
        .map(|text| format!("<si><t>{text}</t></si>"))
        .collect();
    entries.push((
        "xl/sharedStrings.xml".to_owned(),
        format!(
            r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?><sst xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">{strings}</sst>"#
        )
        .into_bytes(),
    ));
    entries.push((
        "xl/workbook.xml".to_owned(),
        format!(
            r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?><workbook xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships"><sheets>{sheet_list}</sheets></workbook>"#
        )
        .into_bytes(),
    ));
    entries.push((
        "xl/_rels/workbook.xml.rels".to_owned(),
        format!(
            r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">{workbook_rels}</Relationships>"#
        )
        .into_bytes(),
    ));
    entries
}

/// An XLSX (see [`xlsx_entries`]).
pub fn xlsx_from_sheets(sheets: &[(&str, &[&[&str]])]) -> Vec<u8> {
    zip_of(&xlsx_entries(sheets))
}

/// The entries of an EPUB 3 with one XHTML chapter per `(title, body)` (the title as its
/// `h1`), listed in the spine in the given order; the chapter files sit in a subfolder of
/// the package document's folder, so hrefs must be resolved.
pub fn epub_entries(chapters: &[(&str, &str)]) -> Vec<(String, Vec<u8>)> {
    let mut entries: Vec<(String, Vec<u8>)> = vec![
        ("mimetype".to_owned(), b"application/epub+zip".to_vec()),
        (
            "META-INF/container.xml".to_owned(),
            br#"<?xml version="1.0"?><container version="1.0" xmlns="urn:oasis:names:tc:opendocument:xmlns:container"><rootfiles><rootfile full-path="OEBPS/content.opf" media-type="application/oebps-package+xml"/></rootfiles></container>"#.to_vec(),
        ),
    ];
    let mut manifest = String::new();
    let mut spine = String::new();
    for (position, (title, body)) in chapters.iter().enumerate() {
        let id = format!("chapter{}", position + 1);
        manifest.push_str(&format!(
            r#"<item id="{id}" href="text/{id}.xhtml" media-type="application/xhtml+xml"/>"#
        ));
        spine.push_str(&format!(r#"<itemref idref="{id}"/>"#));
        let paragraphs: String = body
            .split("\n\n")
            .map(|paragraph| format!("<p>{}</p>", xml_escape(paragraph)))
            .collect();
        entries.push((
            format!("OEBPS/text/{id}.xhtml"),
            format!(
                r#"<?xml version="1.0" encoding="UTF-8"?><html xmlns="http://www.w3.org/1999/xhtml"><head><title>{0}</title></head><body><h1>{0}</h1>{paragraphs}</body></html>"#,
                xml_escape(title)
            )
            .into_bytes(),
        ));
    }
    entries.push((
        "OEBPS/content.opf".to_owned(),
        format!(
            r#"<?xml version="1.0" encoding="UTF-8"?><package xmlns="http://www.idpf.org/2007/opf" version="3.0"><metadata/><manifest><item id="nav" href="nav.xhtml" media-type="application/xhtml+xml" properties="nav"/>{manifest}</manifest><spine>{spine}</spine></package>"#
        )
        .into_bytes(),
    ));
    entries
}

/// An EPUB (see [`epub_entries`]).
pub fn epub_from_chapters(chapters: &[(&str, &str)]) -> Vec<u8> {
    zip_of(&epub_entries(chapters))
}

fn zip_of(entries: &[(String, Vec<u8>)]) -> Vec<u8> {
    let borrowed: Vec<(&str, &[u8])> = entries
        .iter()
        .map(|(name, content)| (name.as_str(), content.as_slice()))
        .collect();
    zip_from_entries(&borrowed)
}

/// A scanned document: each page of `pages` typeset like [`pdf_from_pages`], rendered to an
/// 8-bit grayscale bitmap at 150 dpi by poppler's `pdftoppm` (installed by
/// `scripts/stack.sh`), and wrapped as the only content of a new PDF page (one image, no
/// font, no text operator), so only OCR can read it.
pub fn scanned_pdf(pages: &[&str]) -> Vec<u8> {
    let folder = std::env::temp_dir().join(format!("glassbox-scan-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&folder).expect("scan folder");
    let text_pdf = folder.join("text.pdf");
    std::fs::write(&text_pdf, pdf_from_pages(pages)).expect("write text pdf");
    let status = std::process::Command::new("pdftoppm")
        .args(["-r", "150", "-gray"])
        .arg(&text_pdf)
        .arg(folder.join("page"))
        .status()
        .expect("pdftoppm (poppler-utils) runs");
    assert!(status.success(), "pdftoppm failed");
    let mut rendered: Vec<std::path::PathBuf> = std::fs::read_dir(&folder)
        .expect("scan folder")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|extension| extension == "pgm"))
        .collect();
    rendered.sort();
    let images: Vec<(u32, u32, Vec<u8>)> = rendered
        .iter()
        .map(|path| read_pgm(&std::fs::read(path).expect("read pgm")))
        .collect();
    std::fs::remove_dir_all(&folder).ok();

    let mut document = Document::with_version("1.5");
    let pages_id = document.new_object_id();
    let mut kids = Vec::with_capacity(images.len());
    for (width, height, pixels) in images {
        let mut image = Stream::new(
            dictionary! {
                "Type" => "XObject",
                "Subtype" => "Image",
                "Width" => i64::from(width),
                "Height" => i64::from(height),
                "ColorSpace" => "DeviceGray",
                "BitsPerComponent" => 8,
            },
            pixels,
        );
        image.compress().expect("compress the scan");
        let image_id = document.add_object(image);
        let content = Content {
            operations: vec![
                Operation::new("q", vec![]),
                Operation::new(
                    "cm",
                    vec![
                        PAGE_WIDTH.into(),
                        0.into(),
                        0.into(),
                        PAGE_HEIGHT.into(),
                        0.into(),
                        0.into(),
                    ],
                ),
                Operation::new("Do", vec![Object::Name(b"Scan".to_vec())]),
                Operation::new("Q", vec![]),
            ],
        };
        let content_id = document.add_object(Stream::new(
            Dictionary::new(),
            content.encode().expect("encode content"),
        ));
        let page_id = document.add_object(dictionary! {
            "Type" => "Page",
            "Parent" => pages_id,
            "Contents" => content_id,
            "Resources" => dictionary! { "XObject" => dictionary! { "Scan" => image_id } },
        });
        kids.push(Object::Reference(page_id));
    }
    let page_count = i64::try_from(kids.len()).expect("page count fits i64");
    document.objects.insert(
        pages_id,
        Object::Dictionary(dictionary! {
            "Type" => "Pages",
            "Kids" => kids,
            "Count" => page_count,
            "MediaBox" => media_box(),
        }),
    );
    finish_catalog(&mut document, pages_id);
    save(&mut document)
}

/// A binary PGM (`P5`, maxval 255) as (width, height, pixels).
fn read_pgm(bytes: &[u8]) -> (u32, u32, Vec<u8>) {
    let mut fields = Vec::new();
    let mut position = 0;
    while fields.len() < 4 {
        while bytes[position].is_ascii_whitespace() {
            position += 1;
        }
        let start = position;
        while !bytes[position].is_ascii_whitespace() {
            position += 1;
        }
        fields.push(String::from_utf8_lossy(&bytes[start..position]).into_owned());
    }
    assert_eq!(fields[0], "P5", "pdftoppm -gray writes binary PGM");
    let width: u32 = fields[1].parse().expect("pgm width");
    let height: u32 = fields[2].parse().expect("pgm height");
    let pixels = bytes[position + 1..].to_vec();
    assert_eq!(pixels.len(), (width * height) as usize, "pgm pixel count");
    (width, height, pixels)
}

/// A PNG of a page of `text` rendered like [`scanned_pdf`] (pdftoppm at 150 dpi).
pub fn scanned_png(text: &str) -> Vec<u8> {
    let folder = std::env::temp_dir().join(format!("glassbox-scan-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&folder).expect("scan folder");
    let text_pdf = folder.join("text.pdf");
    std::fs::write(&text_pdf, pdf_from_pages(&[text])).expect("write text pdf");
    let status = std::process::Command::new("pdftoppm")
        .args(["-r", "150", "-gray", "-png", "-singlefile"])
        .arg(&text_pdf)
        .arg(folder.join("page"))
        .status()
        .expect("pdftoppm (poppler-utils) runs");
    assert!(status.success(), "pdftoppm failed");
    let png = std::fs::read(folder.join("page.png")).expect("read png");
    std::fs::remove_dir_all(&folder).ok();
    png
}

/// A top-level outline entry of [`pdf_with_outline`]: title, 0-based page, children
/// (title, 0-based page).
pub type OutlineEntry<'a> = (&'a str, usize, &'a [(&'a str, usize)]);

/// [`pdf_from_pages`] with an outline (bookmarks): one top-level entry per `(title,
/// 0-based page, children)`, each child `(title, 0-based page)` one level down; top-level
/// entries point at their page through a `/Dest`, children through a GoTo action (as
/// LaTeX's hyperref writes them).
pub fn pdf_with_outline(pages: &[&str], outline: &[OutlineEntry<'_>]) -> Vec<u8> {
    let mut document = build_text_pdf(pages);
    let page_ids: Vec<ObjectId> = document.get_pages().into_values().collect();
    let outlines_id = document.new_object_id();
    let mut top_ids = Vec::new();
    for (title, page, children) in outline {
        let entry_id = document.new_object_id();
        let mut child_ids = Vec::new();
        for (child_title, child_page) in children.iter() {
            let child_id = document.new_object_id();
            document.objects.insert(
                child_id,
                Object::Dictionary(dictionary! {
                    "Title" => Object::string_literal(*child_title),
                    "Parent" => entry_id,
                    "A" => dictionary! {
                        "S" => "GoTo",
                        "D" => vec![page_ids[*child_page].into(), "Fit".into()],
                    },
                }),
            );
            child_ids.push(child_id);
        }
        link_siblings(&mut document, &child_ids);
        let mut entry = dictionary! {
            "Title" => Object::string_literal(*title),
            "Parent" => outlines_id,
            "Dest" => vec![page_ids[*page].into(), "Fit".into()],
        };
        if let (Some(first), Some(last)) = (child_ids.first(), child_ids.last()) {
            entry.set("First", *first);
            entry.set("Last", *last);
            entry.set("Count", i64::try_from(child_ids.len()).unwrap_or(0));
        }
        document.objects.insert(entry_id, Object::Dictionary(entry));
        top_ids.push(entry_id);
    }
    link_siblings(&mut document, &top_ids);
    let mut outlines = dictionary! { "Type" => "Outlines" };
    if let (Some(first), Some(last)) = (top_ids.first(), top_ids.last()) {
        outlines.set("First", *first);
        outlines.set("Last", *last);
        outlines.set("Count", i64::try_from(top_ids.len()).unwrap_or(0));
    }
    document
        .objects
        .insert(outlines_id, Object::Dictionary(outlines));
    let catalog_id = document
        .trailer
        .get(b"Root")
        .and_then(Object::as_reference)
        .expect("catalog");
    if let Ok(Object::Dictionary(catalog)) = document.get_object_mut(catalog_id) {
        catalog.set("Outlines", outlines_id);
    }
    save(&mut document)
}

/// Sets `/Prev` and `/Next` between consecutive outline entries.
fn link_siblings(document: &mut Document, ids: &[ObjectId]) {
    for pair in ids.windows(2) {
        if let Ok(Object::Dictionary(entry)) = document.get_object_mut(pair[0]) {
            entry.set("Next", pair[1]);
        }
        if let Ok(Object::Dictionary(entry)) = document.get_object_mut(pair[1]) {
            entry.set("Prev", pair[0]);
        }
    }
}
