//! A writer for PostgreSQL's binary COPY format, for the columns chunks need.
//!
//! Binary COPY skips text parsing on the server: about 20x faster than text COPY for
//! vectors, and far faster than row-by-row INSERT (see bench/).

use uuid::Uuid;

const SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";

pub struct BinaryCopy {
    buffer: Vec<u8>,
}

impl Default for BinaryCopy {
    fn default() -> Self {
        Self::new()
    }
}

impl BinaryCopy {
    pub fn new() -> Self {
        let mut buffer = Vec::with_capacity(64 * 1024);
        buffer.extend_from_slice(SIGNATURE);
        buffer.extend_from_slice(&0i32.to_be_bytes()); // flags
        buffer.extend_from_slice(&0i32.to_be_bytes()); // header extension length
        Self { buffer }
    }

    pub fn start_row(&mut self, fields: i16) {
        self.buffer.extend_from_slice(&fields.to_be_bytes());
    }

    fn field(&mut self, bytes: &[u8]) {
        self.buffer
            .extend_from_slice(&(bytes.len() as i32).to_be_bytes());
        self.buffer.extend_from_slice(bytes);
    }

    pub fn uuid(&mut self, value: Uuid) {
        self.field(value.as_bytes());
    }

    pub fn text(&mut self, value: &str) {
        self.field(value.as_bytes());
    }

    pub fn bytea(&mut self, value: &[u8]) {
        self.field(value);
    }

    pub fn int4(&mut self, value: i32) {
        self.field(&value.to_be_bytes());
    }

    pub fn optional_text(&mut self, value: Option<&str>) {
        match value {
            Some(value) => self.text(value),
            None => self.null(),
        }
    }

    fn null(&mut self) {
        self.buffer.extend_from_slice(&(-1i32).to_be_bytes());
    }

    pub fn optional_int4(&mut self, value: Option<i32>) {
        match value {
            Some(value) => self.int4(value),
            None => self.null(),
        }
    }

    pub fn boolean(&mut self, value: bool) {
        self.field(&[u8::from(value)]);
    }

    /// A one-dimensional `text[]` (no NULL elements); empty gives `{}`.
    pub fn text_array(&mut self, values: &[String]) {
        /// The type OID of `text`.
        const TEXT_OID: i32 = 25;
        let mut body = Vec::new();
        let dimensions: i32 = if values.is_empty() { 0 } else { 1 };
        body.extend_from_slice(&dimensions.to_be_bytes());
        body.extend_from_slice(&0i32.to_be_bytes()); // no NULL elements
        body.extend_from_slice(&TEXT_OID.to_be_bytes());
        if !values.is_empty() {
            body.extend_from_slice(&(values.len() as i32).to_be_bytes());
            body.extend_from_slice(&1i32.to_be_bytes()); // lower bound
            for value in values {
                body.extend_from_slice(&(value.len() as i32).to_be_bytes());
                body.extend_from_slice(value.as_bytes());
            }
        }
        self.field(&body);
    }

    /// pgvector's binary form: dimensions (int16), unused (int16), then float4s.
    pub fn vector(&mut self, values: &[f32]) {
        self.buffer
            .extend_from_slice(&((4 + 4 * values.len()) as i32).to_be_bytes());
        self.buffer
            .extend_from_slice(&(values.len() as i16).to_be_bytes());
        self.buffer.extend_from_slice(&0i16.to_be_bytes());
        for value in values {
            self.buffer.extend_from_slice(&value.to_be_bytes());
        }
    }

    pub fn finish(mut self) -> Vec<u8> {
        self.buffer.extend_from_slice(&(-1i16).to_be_bytes());
        self.buffer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_the_copy_format() {
        let mut copy = BinaryCopy::new();
        copy.start_row(3);
        copy.int4(7);
        copy.optional_int4(None);
        copy.vector(&[1.0, -2.0]);
        let bytes = copy.finish();
        assert_eq!(&bytes[..11], SIGNATURE);
        let row = &bytes[19..];
        assert_eq!(&row[..2], &3i16.to_be_bytes());
        assert_eq!(&row[2..6], &4i32.to_be_bytes());
        assert_eq!(&row[6..10], &7i32.to_be_bytes());
        assert_eq!(&row[10..14], &(-1i32).to_be_bytes());
        assert_eq!(&row[14..18], &12i32.to_be_bytes());
        assert_eq!(&row[18..20], &2i16.to_be_bytes());
        assert_eq!(&row[22..26], &1.0f32.to_be_bytes());
        assert_eq!(&bytes[bytes.len() - 2..], &(-1i16).to_be_bytes());
    }
}
