/// Normalizes extracted text so every kind reaches the chunker in the same shape.
///
/// - CRLF and lone CR become LF; a form feed becomes a paragraph break.
/// - Ligatures ﬀ ﬁ ﬂ ﬃ ﬄ ﬅ ﬆ are expanded.
/// - NUL and other control characters are dropped, as are soft hyphens, zero-width spaces and BOMs;
///   tabs and Unicode spaces become plain spaces.
/// - A word hyphenated at a line end is joined ("exam-\nple" becomes "example") when a letter precedes the
///   hyphen and a lowercase letter starts the next line.
/// - Runs of spaces collapse to one, every line is trimmed, blank lines collapse to a single paragraph
///   break, and the whole text is trimmed. Single line breaks are kept (Markdown needs them).
pub fn normalize_text(text: &str) -> String {
    let cleaned = clean_characters(text);
    let mut lines: Vec<String> = Vec::new();
    for raw_line in cleaned.split('\n') {
        let line = collapse_spaces(raw_line);
        let joins_previous = match lines.last() {
            Some(previous) => ends_with_word_hyphen(previous) && starts_with_lowercase(&line),
            None => false,
        };
        if joins_previous {
            if let Some(previous) = lines.last_mut() {
                previous.pop();
                previous.push_str(&line);
            }
        } else {
            lines.push(line);
        }
    }

    let mut output = String::with_capacity(cleaned.len());
    let mut pending_blank = false;
    for line in lines {
        if line.is_empty() {
            pending_blank = true;
            continue;
        }
        if !output.is_empty() {
            output.push_str(if pending_blank { "\n\n" } else { "\n" });
        }
        output.push_str(&line);
        pending_blank = false;
    }
    output
}

/// Line endings, ligatures, control and invisible characters.
fn clean_characters(text: &str) -> String {
    let mut output = String::with_capacity(text.len());
    let mut characters = text.chars().peekable();
    while let Some(character) = characters.next() {
        match character {
            '\r' => {
                if characters.peek() != Some(&'\n') {
                    output.push('\n');
                }
            }
            '\n' => output.push('\n'),
            '\u{000C}' => output.push_str("\n\n"),
            '\t' => output.push(' '),
            '\u{FB00}' => output.push_str("ff"),
            '\u{FB01}' => output.push_str("fi"),
            '\u{FB02}' => output.push_str("fl"),
            '\u{FB03}' => output.push_str("ffi"),
            '\u{FB04}' => output.push_str("ffl"),
            '\u{FB05}' | '\u{FB06}' => output.push_str("st"),
            // Soft hyphen, zero-width space/joiners, byte order mark.
            '\u{00AD}' | '\u{200B}' | '\u{200C}' | '\u{200D}' | '\u{2060}' | '\u{FEFF}' => {}
            // Line and paragraph separators.
            '\u{2028}' => output.push('\n'),
            '\u{2029}' => output.push_str("\n\n"),
            other if other.is_control() => {}
            other if other.is_whitespace() => output.push(' '),
            other => output.push(other),
        }
    }
    output
}

/// Collapses runs of spaces and trims the line.
fn collapse_spaces(line: &str) -> String {
    let mut output = String::with_capacity(line.len());
    for word in line.split(' ').filter(|word| !word.is_empty()) {
        if !output.is_empty() {
            output.push(' ');
        }
        output.push_str(word);
    }
    output
}

/// "exam-" yes, "-" or "2-" or "--" no.
fn ends_with_word_hyphen(line: &str) -> bool {
    let mut reversed = line.chars().rev();
    reversed.next() == Some('-') && reversed.next().is_some_and(char::is_alphabetic)
}

fn starts_with_lowercase(line: &str) -> bool {
    line.chars().next().is_some_and(char::is_lowercase)
}
