//! Text that came over the wire, made safe to show.
//!
//! A key, a request id or an error's words are anyone's to choose. Printed
//! as they are, a line break in one starts a line that reads as the
//! program's own, an escape sequence drives the terminal (clears the screen,
//! retitles the window), and a right-to-left override or a zero-width space
//! makes one key pass for another. Both the client (what it prints) and the
//! node (what it logs) show such text through this module.

/// Text for a terminal that keeps its line breaks: every other character
/// that would not show as itself is escaped (`\u{1b}`). For what a server
/// says (an error, a trace, an event).
pub fn printable(text: &str) -> String {
    escaped(text, |c| c != '\n' && hides(c))
}

/// Text a terminal is to show as it was written (a stored value): every
/// control character but a line break and a tab escaped, so that none
/// drives the terminal (an escape sequence, a carriage return that writes
/// over a line). Unlike [`printable`]'s, characters that hide or reorder
/// text stay (the joiners in an emoji, a Persian word's non-joiner): a value
/// is read, not compared with another.
pub fn as_written(text: &str) -> String {
    escaped(text, |c| c.is_control() && c != '\n' && c != '\t')
}

/// Text for one line (a listing's entry, a log field): line breaks, tabs and
/// every other character that would not show as itself escaped (`\n`, `\t`,
/// `\u{1b}`), and a backslash doubled (`\\`), so that an escaped line break
/// and a backslash written before an `n` read differently.
pub fn one_line(text: &str) -> String {
    escaped(text, |c| c == '\\' || hides(c))
}

/// Whether `c` would not show as itself: a control character (a line break,
/// an escape sequence's start), or one that reorders or hides the text
/// around it (right-to-left overrides, zero-width spaces, Unicode's own line
/// and paragraph separators, and the characters terminals draw as nothing:
/// a soft hyphen, a grapheme joiner, fillers, tags, the invisible operators
/// and the reserved ones among them, the variation selectors' supplement,
/// musical and shorthand format controls), so that one key could
/// pass for another. Not the two variation selectors emoji are written with
/// (U+FE0E, U+FE0F).
pub fn hides(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{00ad}'
                | '\u{034f}'
                | '\u{061c}'
                | '\u{115f}'..='\u{1160}'
                | '\u{17b4}'..='\u{17b5}'
                | '\u{180b}'..='\u{180f}'
                | '\u{200b}'..='\u{200f}'
                | '\u{2028}'..='\u{202e}'
                | '\u{2060}'..='\u{206f}'
                | '\u{3164}'
                | '\u{fe00}'..='\u{fe0d}'
                | '\u{feff}'
                | '\u{ffa0}'
                | '\u{fff0}'..='\u{fff8}'
                | '\u{1bca0}'..='\u{1bca3}'
                | '\u{1d173}'..='\u{1d17a}'
                | '\u{e0000}'..='\u{e0fff}'
        )
}

/// `text`, with each character `escape` selects escaped (`\u{1b}`), but the
/// tags of a flag: the flags of England, Scotland and Wales are a black flag
/// and tag characters, which alone are drawn as nothing.
fn escaped(text: &str, escape: impl Fn(char) -> bool) -> String {
    let mut out = String::with_capacity(text.len());
    // How many of the characters to come are a flag's tags, kept as they are.
    let mut flag_tags = 0;
    for (at, c) in text.char_indices() {
        let in_flag = flag_tags > 0;
        flag_tags = match c {
            BLACK_FLAG => tags_of_flag(&text[at + c.len_utf8()..]),
            _ => flag_tags.saturating_sub(1),
        };
        match escape(c) && !in_flag {
            true => out.extend(c.escape_default()),
            false => out.push(c),
        }
    }
    out
}

/// The flag the tags of [`TAG_FLAGS`] follow.
const BLACK_FLAG: char = '\u{1f3f4}';

/// The flags written as a black flag, tags spelling the region, and a cancel
/// tag: the ones Unicode recommends terminals draw.
const TAG_FLAGS: [&str; 3] = ["gbeng", "gbsct", "gbwls"];

/// How many characters of `after` (what follows a black flag) are the tags
/// of one of [`TAG_FLAGS`], its cancel tag included; 0 if none. Any other
/// tag is escaped, as it would be drawn as nothing: a black flag with tags
/// spelling no flag could pass for a black flag alone.
fn tags_of_flag(after: &str) -> usize {
    let spells = |region: &str| {
        let mut tags = after.chars();
        region
            .bytes()
            .all(|b| tags.next() == char::from_u32(0xe0000 + u32::from(b)))
            && tags.next() == Some('\u{e007f}')
    };
    TAG_FLAGS
        .iter()
        .find(|region| spells(region))
        .map_or(0, |region| region.chars().count() + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_stays_on_its_line_and_cannot_drive_the_terminal() {
        assert_eq!(one_line("hello, wörld ✓"), "hello, wörld ✓");
        assert_eq!(one_line("two\nlines\tand a tab"), "two\\nlines\\tand a tab");
        assert_eq!(one_line("\x1b[2Jcleared"), "\\u{1b}[2Jcleared");
        // A backslash written before an `n` is not a line break.
        assert_eq!(one_line(r"two\nlines"), r"two\\nlines");
        assert_ne!(one_line(r"two\nlines"), one_line("two\nlines"));
        // Nor a line separator some viewers break the line at.
        assert_eq!(one_line("a\u{2028}b"), "a\\u{2028}b");
    }

    /// What a server says keeps its line breaks, and only them.
    #[test]
    fn printable_keeps_line_breaks_and_nothing_else_that_hides() {
        assert_eq!(
            printable("key \"\x1b]0;owned\x07\" exists\nnext line"),
            "key \"\\u{1b}]0;owned\\u{7}\" exists\nnext line"
        );
        assert_eq!(printable(r"a\nb"), r"a\nb");
        assert_eq!(printable("ad\u{ad}min"), "ad\\u{ad}min");
    }

    /// No key can pass for another: "admin" written backwards, shown
    /// forwards by a right-to-left override, or with a character drawn as
    /// nothing (a zero width, a tag space, a grapheme joiner, a soft hyphen).
    #[test]
    fn characters_that_hide_are_escaped() {
        assert_eq!(one_line("\u{202e}nimda"), "\\u{202e}nimda");
        assert_eq!(one_line("ad\u{200b}min"), "ad\\u{200b}min");
        assert_eq!(one_line("admin\u{e0020}"), "admin\\u{e0020}");
        assert_eq!(one_line("ad\u{34f}min"), "ad\\u{34f}min");
        assert_eq!(one_line("ad\u{ad}min"), "ad\\u{ad}min");
        // Nor one reserved, drawn as nothing too, nor the rarer format
        // controls and the supplement's variation selectors.
        assert_eq!(one_line("ad\u{2065}min"), "ad\\u{2065}min");
        assert_eq!(one_line("admin\u{e0100}"), "admin\\u{e0100}");
        assert_eq!(one_line("ad\u{1d173}min"), "ad\\u{1d173}min");
        // An emoji's variation selector is part of how it is written; the
        // others are drawn as nothing.
        assert_eq!(one_line("\u{2764}\u{fe0f}"), "\u{2764}\u{fe0f}");
        assert_eq!(one_line("ad\u{fe00}min"), "ad\\u{fe00}min");
    }

    /// A flag's tags are how England's is written; tags that spell no flag,
    /// or come after one, are drawn as nothing, and a black flag with them
    /// could pass for a black flag alone.
    #[test]
    fn only_the_tags_of_a_flag_are_kept() {
        let england = "\u{1f3f4}\u{e0067}\u{e0062}\u{e0065}\u{e006e}\u{e0067}\u{e007f}";
        let scotland = "\u{1f3f4}\u{e0067}\u{e0062}\u{e0073}\u{e0063}\u{e0074}\u{e007f}";
        assert_eq!(one_line(england), england);
        assert_eq!(printable(england), england);
        assert_eq!(
            printable(&format!("{scotland}{england}")),
            format!("{scotland}{england}")
        );
        assert_eq!(
            one_line("\u{1f3f4}\u{e0061}\u{e0064}"),
            "\u{1f3f4}\\u{e0061}\\u{e0064}"
        );
        assert_eq!(
            one_line(&format!("{england}\u{e0020}")),
            format!("{england}\\u{{e0020}}")
        );
    }
}
