//! ocr: Tesseract's C API (`libtesseract.so.5`), loaded at run time, for the OCR that
//! worker-files' extraction child runs on pages without a text layer and on images.
//!
//! # Why this crate allows unsafe code
//! The workspace forbids `unsafe`. Calling a C library needs it: loading the library and
//! its symbols, and each call through a C function pointer. The binding crates on offer
//! generate bindings with bindgen at build time (a libclang dependency for every build)
//! and link libtesseract into every binary; the seven functions used here are declared by
//! hand instead, and the library is opened with `dlopen` the way pdfium is, so
//! worker-files builds and runs without Tesseract (OCR is then reported unavailable).
//! Every `unsafe` block is in this file, next to the invariant it relies on.
//!
//! # Layout
//! - [`Tesseract`]: the loaded library; [`Tesseract::engine`] starts an engine for a language.
//! - [`Engine`]: one `TessBaseAPI` handle; [`Engine::recognize`] reads text from an 8-bit
//!   grayscale image ([`GrayImage`]).

// The reason is at the top of this file; every block carries its SAFETY comment.
#![allow(unsafe_code)]

use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::path::Path;

/// The library's file name, as Debian's `libtesseract5` installs it.
pub const LIBRARY_NAME: &str = "libtesseract.so.5";

#[derive(Debug, thiserror::Error)]
pub enum OcrError {
    #[error("cannot load {library}: {message}")]
    Load { library: String, message: String },
    #[error("tesseract cannot start for language {language}: is its traineddata installed?")]
    Init { language: String },
    #[error(
        "image is {width}x{height} with {bytes_per_line} bytes per line but has {length} bytes"
    )]
    BadImage {
        width: usize,
        height: usize,
        bytes_per_line: usize,
        length: usize,
    },
    #[error("tesseract returned no text")]
    NoText,
}

type Create = unsafe extern "C" fn() -> *mut c_void;
type Init3 = unsafe extern "C" fn(*mut c_void, *const c_char, *const c_char) -> c_int;
type SetVariable = unsafe extern "C" fn(*mut c_void, *const c_char, *const c_char) -> c_int;
type SetImage = unsafe extern "C" fn(*mut c_void, *const u8, c_int, c_int, c_int, c_int);
type SetSourceResolution = unsafe extern "C" fn(*mut c_void, c_int);
type GetUtf8Text = unsafe extern "C" fn(*mut c_void) -> *mut c_char;
type DeleteText = unsafe extern "C" fn(*mut c_char);
type Delete = unsafe extern "C" fn(*mut c_void);

/// Tesseract's C API, loaded.
pub struct Tesseract {
    // Keeps the library mapped while the function pointers below are in use.
    _library: libloading::Library,
    create: Create,
    init: Init3,
    set_variable: SetVariable,
    set_image: SetImage,
    set_source_resolution: SetSourceResolution,
    get_utf8_text: GetUtf8Text,
    delete_text: DeleteText,
    delete: Delete,
}

impl Tesseract {
    /// Loads `library` (a path, or a bare name the dynamic loader looks up, such as
    /// [`LIBRARY_NAME`]).
    pub fn load(library: &Path) -> Result<Tesseract, OcrError> {
        let load_error = |message: String| OcrError::Load {
            library: library.display().to_string(),
            message,
        };
        // SAFETY: loading runs the library's initialisers; libtesseract's only set up
        // C++ statics and have no preconditions on the caller.
        let loaded = unsafe { libloading::Library::new(library.as_os_str()) }
            .map_err(|error| load_error(error.to_string()))?;
        macro_rules! symbol {
            ($name:literal, $kind:ty) => {{
                // SAFETY: the type matches the declaration of this function in Tesseract's
                // `tesseract/capi.h` (5.x), which has not changed since 4.0.
                let found = unsafe { loaded.get::<$kind>($name) }
                    .map_err(|error| load_error(error.to_string()))?;
                *found
            }};
        }
        let create = symbol!(b"TessBaseAPICreate\0", Create);
        let init = symbol!(b"TessBaseAPIInit3\0", Init3);
        let set_variable = symbol!(b"TessBaseAPISetVariable\0", SetVariable);
        let set_image = symbol!(b"TessBaseAPISetImage\0", SetImage);
        let set_source_resolution =
            symbol!(b"TessBaseAPISetSourceResolution\0", SetSourceResolution);
        let get_utf8_text = symbol!(b"TessBaseAPIGetUTF8Text\0", GetUtf8Text);
        let delete_text = symbol!(b"TessDeleteText\0", DeleteText);
        let delete = symbol!(b"TessBaseAPIDelete\0", Delete);
        Ok(Tesseract {
            _library: loaded,
            create,
            init,
            set_variable,
            set_image,
            set_source_resolution,
            get_utf8_text,
            delete_text,
            delete,
        })
    }

    /// An engine for `language` (`eng`, or `eng+deu`), with the traineddata in the
    /// library's default folder.
    pub fn engine(&self, language: &str) -> Result<Engine<'_>, OcrError> {
        let init_error = || OcrError::Init {
            language: language.to_owned(),
        };
        let language_name = CString::new(language).map_err(|_| init_error())?;
        // SAFETY: TessBaseAPICreate has no preconditions; it returns a new handle or null.
        let handle = unsafe { (self.create)() };
        if handle.is_null() {
            return Err(init_error());
        }
        let engine = Engine {
            tesseract: self,
            handle,
        };
        // SAFETY: `handle` is a live handle from TessBaseAPICreate; a null datapath means
        // the compiled-in default; `language_name` is a NUL-terminated string that outlives
        // the call.
        let status = unsafe { (self.init)(handle, std::ptr::null(), language_name.as_ptr()) };
        if status != 0 {
            return Err(init_error());
        }
        // Tesseract writes its diagnostics to stderr unless told otherwise; the child's
        // stderr is kept only to explain crashes.
        engine.set_variable(c"debug_file", c"/dev/null");
        Ok(engine)
    }
}

/// An 8-bit grayscale image, row by row.
pub struct GrayImage<'a> {
    pub width: usize,
    pub height: usize,
    pub bytes_per_line: usize,
    pub pixels: &'a [u8],
    /// Dots per inch, so Tesseract knows the text's size in points.
    pub dots_per_inch: u32,
}

/// One Tesseract engine (`TessBaseAPI`): not shared between threads.
pub struct Engine<'library> {
    tesseract: &'library Tesseract,
    handle: *mut c_void,
}

impl Engine<'_> {
    fn set_variable(&self, name: &CStr, value: &CStr) {
        // SAFETY: `handle` is live (owned by self); both strings are NUL-terminated statics.
        unsafe { (self.tesseract.set_variable)(self.handle, name.as_ptr(), value.as_ptr()) };
    }

    /// The text Tesseract reads in `image` (UTF-8, lines and paragraphs as it found them).
    pub fn recognize(&mut self, image: &GrayImage<'_>) -> Result<String, OcrError> {
        let bad_image = || OcrError::BadImage {
            width: image.width,
            height: image.height,
            bytes_per_line: image.bytes_per_line,
            length: image.pixels.len(),
        };
        let needed = image
            .bytes_per_line
            .checked_mul(image.height)
            .ok_or_else(bad_image)?;
        if image.width == 0
            || image.height == 0
            || image.bytes_per_line < image.width
            || image.pixels.len() < needed
        {
            return Err(bad_image());
        }
        let width = c_int::try_from(image.width).map_err(|_| bad_image())?;
        let height = c_int::try_from(image.height).map_err(|_| bad_image())?;
        let bytes_per_line = c_int::try_from(image.bytes_per_line).map_err(|_| bad_image())?;
        let dots_per_inch = c_int::try_from(image.dots_per_inch).unwrap_or(300);
        // SAFETY: `pixels` holds at least `bytes_per_line * height` bytes (checked above) of
        // 1 byte per pixel, and stays borrowed until GetUTF8Text below has read it (SetImage
        // copies the pixels into Tesseract's own image anyway).
        unsafe {
            (self.tesseract.set_image)(
                self.handle,
                image.pixels.as_ptr(),
                width,
                height,
                1,
                bytes_per_line,
            );
            (self.tesseract.set_source_resolution)(self.handle, dots_per_inch);
        }
        // SAFETY: `handle` is live and has an image; the result is a NUL-terminated string
        // Tesseract allocated (or null), released with TessDeleteText below.
        let text_pointer = unsafe { (self.tesseract.get_utf8_text)(self.handle) };
        if text_pointer.is_null() {
            return Err(OcrError::NoText);
        }
        // SAFETY: non-null, NUL-terminated, valid until TessDeleteText.
        let text = unsafe { CStr::from_ptr(text_pointer) }
            .to_string_lossy()
            .into_owned();
        // SAFETY: the pointer came from TessBaseAPIGetUTF8Text and is released once.
        unsafe { (self.tesseract.delete_text)(text_pointer) };
        Ok(text)
    }
}

impl Drop for Engine<'_> {
    fn drop(&mut self) {
        // SAFETY: `handle` came from TessBaseAPICreate and is deleted once, here
        // (TessBaseAPIDelete also ends the engine).
        unsafe { (self.tesseract.delete)(self.handle) };
    }
}
