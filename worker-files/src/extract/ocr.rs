//! OCR with Tesseract (the `ocr` crate, which opens `libtesseract.so.5` at run time):
//! PDF pages without a text layer, rendered by pdfium, and PNG, JPEG and TIFF images.
//!
//! It runs in the extraction child like every other reader, under the same limits, and
//! reads at most [`ExtractLimits::ocr_max_pages`] pages of a file (the budget): the pages
//! after it stay empty, and a PDF whose text pages and OCR'd pages are all empty is still
//! `empty_text`. Text read this way is marked (`Page::ocr`), and so are its chunks.

use std::path::Path;
use std::sync::OnceLock;

use pdfium_render::prelude::{PdfPage, PdfRenderConfig};

use super::{ExtractError, ExtractLimits, Page, normalize_text};

/// The language OCR reads (Debian's `tesseract-ocr-eng`).
pub const OCR_LANGUAGE: &str = "eng";
/// A rendered page is at most this many pixels on a side, whatever its media box claims.
const MAX_RENDER_PIXELS: i32 = 6_000;
/// Images larger than this on a side, or needing more memory to decode, are `too_large`.
const MAX_IMAGE_PIXELS: u32 = 12_000;
const MAX_IMAGE_DECODE_BYTES: u64 = 256 * 1024 * 1024;

/// Tesseract, loaded once per process; `Err` says why OCR is unavailable.
fn tesseract() -> Result<&'static ::ocr::Tesseract, String> {
    static TESSERACT: OnceLock<Result<::ocr::Tesseract, String>> = OnceLock::new();
    TESSERACT
        .get_or_init(|| {
            ::ocr::Tesseract::load(Path::new(::ocr::LIBRARY_NAME))
                .map_err(|error| error.to_string())
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// Reads pages for one file, within its budget.
pub(super) struct PageReader {
    engine: Option<::ocr::Engine<'static>>,
    pages_left: u32,
    dots_per_inch: u32,
}

impl PageReader {
    pub(super) fn new(limits: &ExtractLimits) -> PageReader {
        PageReader {
            engine: None,
            pages_left: limits.ocr_max_pages,
            dots_per_inch: limits.ocr_dots_per_inch.clamp(72, 600),
        }
    }

    /// No more OCR for this file (Tesseract is unavailable).
    pub(super) fn switch_off(&mut self) {
        self.pages_left = 0;
    }

    /// Whether the budget allows another page.
    pub(super) fn has_budget(&self) -> bool {
        self.pages_left > 0
    }

    fn engine(&mut self) -> Result<&mut ::ocr::Engine<'static>, ExtractError> {
        if self.engine.is_none() {
            let loaded = tesseract().map_err(|detail| ExtractError::Io {
                detail: format!("OCR unavailable: {detail}"),
            })?;
            let engine = loaded
                .engine(OCR_LANGUAGE)
                .map_err(|error| ExtractError::Io {
                    detail: format!("OCR unavailable: {error}"),
                })?;
            self.engine = Some(engine);
        }
        Ok(self.engine.as_mut().expect("engine set above"))
    }

    /// Normalized text of an 8-bit grayscale image; spends one page of the budget.
    fn read_gray(
        &mut self,
        width: usize,
        height: usize,
        bytes_per_line: usize,
        pixels: &[u8],
        dots_per_inch: u32,
    ) -> Result<String, ExtractError> {
        self.pages_left = self.pages_left.saturating_sub(1);
        let engine = self.engine()?;
        let image = ::ocr::GrayImage {
            width,
            height,
            bytes_per_line,
            pixels,
            dots_per_inch,
        };
        let text = engine
            .recognize(&image)
            .map_err(|error| ExtractError::Corrupt {
                detail: format!("OCR failed: {error}"),
            })?;
        Ok(normalize_text(&text))
    }

    /// Renders a PDF page with pdfium and reads it.
    pub(super) fn read_pdf_page(&mut self, page: &PdfPage<'_>) -> Result<String, ExtractError> {
        let scale = self.dots_per_inch as f32 / 72.0;
        let config = PdfRenderConfig::new()
            .scale_page_by_factor(scale)
            .set_maximum_width(MAX_RENDER_PIXELS)
            .set_maximum_height(MAX_RENDER_PIXELS);
        let bitmap = page
            .render_with_config(&config)
            .map_err(|error| ExtractError::Corrupt {
                detail: format!("page cannot be rendered for OCR: {error}"),
            })?;
        let width = usize::try_from(bitmap.width()).unwrap_or(0);
        let height = usize::try_from(bitmap.height()).unwrap_or(0);
        let bgra = bitmap.as_raw_bytes();
        // pdfium's buffer (15 MB for a letter page at 200 dpi) goes before Tesseract starts.
        drop(bitmap);
        let stride = bgra.len().checked_div(height).unwrap_or(0);
        if width == 0 || stride < width * 4 {
            return Ok(String::new());
        }
        let mut gray = Vec::with_capacity(width * height);
        for row in bgra.chunks_exact(stride).take(height) {
            for pixel in row[..width * 4].chunks_exact(4) {
                let luminance = (u32::from(pixel[0]) * 29
                    + u32::from(pixel[1]) * 150
                    + u32::from(pixel[2]) * 77)
                    >> 8;
                gray.push(luminance as u8);
            }
        }
        drop(bgra);
        self.read_gray(width, height, width, &gray, self.dots_per_inch)
    }
}

/// A PNG, JPEG or TIFF image (the first frame of a multi-page TIFF) read by OCR.
pub(super) fn extract_image(
    path: &Path,
    limits: &ExtractLimits,
) -> Result<Vec<Page>, ExtractError> {
    let mut reader = image::ImageReader::open(path)
        .map_err(|error| ExtractError::io("open image", &error))?
        .with_guessed_format()
        .map_err(|error| ExtractError::io("read image", &error))?;
    let mut image_limits = image::Limits::default();
    image_limits.max_image_width = Some(MAX_IMAGE_PIXELS);
    image_limits.max_image_height = Some(MAX_IMAGE_PIXELS);
    image_limits.max_alloc = Some(MAX_IMAGE_DECODE_BYTES);
    reader.limits(image_limits);
    let decoded = reader.decode().map_err(|error| match error {
        image::ImageError::Limits(limit) => ExtractError::TooLarge {
            detail: format!("image exceeds the decoding limits: {limit}"),
        },
        image::ImageError::Unsupported(unsupported) => ExtractError::UnsupportedType {
            detail: format!("image format not supported: {unsupported}"),
        },
        other => ExtractError::Corrupt {
            detail: format!("image cannot be decoded: {other}"),
        },
    })?;
    let gray = decoded.to_luma8();
    drop(decoded);
    let mut reader = PageReader::new(limits);
    if !reader.has_budget() {
        return Err(ExtractError::EmptyText {
            detail: "image not read: OCR is switched off (ocr_max_pages = 0)".to_owned(),
        });
    }
    let (width, height) = (gray.width() as usize, gray.height() as usize);
    // Images rarely say their resolution reliably; 300 dpi is Tesseract's own assumption.
    let text = reader.read_gray(width, height, width, gray.as_raw(), 300)?;
    Ok(vec![Page {
        ocr: true,
        ..Page::new(Some(1), text)
    }])
}
