-- Structure-aware chunks and OCR (issue 14): each chunk's heading path (the titles of the
-- sections it starts in, outermost first) and whether its text was read by OCR.
--
-- Both columns are nullable without a default, so adding them touches only the catalog
-- (no rewrite, no scan); NULL means "stored before this migration" (the extractor did not
-- record it). Workers write an array (empty when the document has no headings) and a
-- boolean. lock_timeout as in 0008: give up rather than queue in front of the workers' COPY.
SET LOCAL lock_timeout = '5s';

ALTER TABLE chunks ADD COLUMN heading_path text[];
ALTER TABLE chunks ADD COLUMN ocr boolean;

-- Speaker notes (PPTX) are a part of their own. The wider CHECK is added NOT VALID: every
-- existing row already satisfies the narrower one, so nothing needs to be scanned.
ALTER TABLE chunks DROP CONSTRAINT chunks_part_check;
ALTER TABLE chunks ADD CONSTRAINT chunks_part_check
    CHECK (part IN ('table', 'text_box', 'footnote', 'endnote', 'comment', 'header', 'footer', 'notes')) NOT VALID;
