-- Which engine produced each file's text (pdfium, pdf-extract, docx, html, text): with
-- extractor_version, it lets a `reextract` schedule target files by engine or version.
ALTER TABLE files ADD COLUMN extraction_engine text;

-- Where a chunk's text comes from in its document: NULL for body text, else table,
-- text_box, footnote, endnote, comment, header or footer (DOCX parts), so a search hit can
-- say where it was found.
ALTER TABLE chunks ADD COLUMN part text
    CHECK (part IN ('table', 'text_box', 'footnote', 'endnote', 'comment', 'header', 'footer'));

-- `reextract` by engine or version looks at ready files only.
CREATE INDEX files_ready_extraction ON files (extraction_engine, extractor_version) WHERE status = 'ready';
