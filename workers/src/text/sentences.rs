//! Sentence splitting after spaCy's rule-based `Sentencizer`, which the reference system used.
//!
//! spaCy first tokenizes, then starts a new sentence at the first non-punctuation token after a token that
//! is exactly a sentence-final character (`.`, `!`, `?` and their non-Latin kin). So what decides a
//! boundary is whether the tokenizer splits a period off a word. This module reproduces the parts of
//! spaCy's English tokenizer that matter for that: whitespace splitting, prefix and suffix punctuation,
//! the suffix rule for `.` (split after a digit, a lowercase letter or punctuation, or two capitals, so
//! `U.S.`, `F.` and `3.5` keep theirs), the infix rule (`end.Next`), ellipses, and the abbreviation
//! exceptions (`Mr.`, `e.g.`, `Inc.` …). One deliberate difference: an opening quote or bracket right
//! after a boundary starts the next sentence (spaCy, which cannot tell opening from closing, hangs it on
//! the previous one); closing quotes and brackets stay with the sentence they close.

/// Sentence-final characters (spaCy's `Sentencizer.default_punct_chars`, the common subset).
const TERMINALS: &[char] = &[
    '.', '!', '?', '։', '؟', '۔', '܀', '܁', '܂', '।', '॥', '။', '።', '፧', '፨', '‼', '‽', '⁇', '⁈', '⁉', '⸮',
    '﹒', '﹖', '﹗', '！', '．', '？', '｡', '。',
];

/// Characters split off the end of a word (besides `.`, handled by its own rule).
const SUFFIXES: &[char] = &[
    '"', '\'', ')', ']', '}', '”', '’', '»', '›', ',', ';', ':', '!', '?', '…', '‼', '‽', '！', '？', '。', '｡',
    '،', '؟', '۔', '।', '॥',
];

/// Characters split off the start of a word.
const PREFIXES: &[char] = &['"', '\'', '(', '[', '{', '“', '‘', '«', '‹', '„', '¿', '¡', '`'];

/// spaCy's English tokenizer exceptions that end in a period.
const ABBREVIATIONS: &[&str] = &[
    "a.m.", "Adm.", "Ala.", "Apr.", "Ariz.", "Ark.", "Aug.", "Bros.", "Calif.", "co.", "Co.", "Colo.", "Conn.",
    "Corp.", "D.C.", "Dec.", "Del.", "Dr.", "e.g.", "E.g.", "E.G.", "Feb.", "Fla.", "Ga.", "Gen.", "Gov.", "i.e.",
    "I.e.", "I.E.", "Ill.", "Inc.", "Ind.", "Jan.", "Jr.", "Jul.", "Jun.", "Kan.", "Kans.", "Ky.", "La.", "Ltd.",
    "Mar.", "Mass.", "Md.", "Messrs.", "Mich.", "Minn.", "Miss.", "Mo.", "Mont.", "Mr.", "Mrs.", "Ms.", "Mt.",
    "N.C.", "N.D.", "N.H.", "N.J.", "N.M.", "N.Y.", "Neb.", "Nebr.", "Nev.", "Nov.", "Oct.", "Okla.", "Ore.",
    "p.m.", "Pa.", "Ph.D.", "Prof.", "Rep.", "Rev.", "Sen.", "Sep.", "Sept.", "St.", "Tenn.", "Va.", "vs.", "v.s.",
    "Wash.", "Wis.",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Exactly one sentence-final character.
    Terminal,
    /// An opening quote or bracket split off the front of a word.
    Opening,
    /// Any other token made only of punctuation.
    Punct,
    Word,
}

#[derive(Debug, Clone, Copy)]
struct Token {
    start: usize,
    end: usize,
    kind: Kind,
}

/// Unicode punctuation (spaCy's `is_punct`) for the characters that matter here; currency and math
/// symbols are not punctuation.
fn is_punct_char(c: char) -> bool {
    (c.is_ascii_punctuation() && !"$+<=>^`|~".contains(c))
        || TERMINALS.contains(&c)
        || SUFFIXES.contains(&c)
        || PREFIXES.contains(&c)
        || "–—‐‑‒―·•†‡※¶§".contains(c)
}

fn classify(chars: &[char]) -> Kind {
    if chars.len() == 1 && TERMINALS.contains(&chars[0]) {
        Kind::Terminal
    } else if chars.iter().all(|&c| is_punct_char(c)) {
        Kind::Punct
    } else {
        Kind::Word
    }
}

/// Splits one whitespace-free word `text[start..end]` into tokens, appended to `out`.
fn split_word(text: &[char], mut start: usize, end: usize, out: &mut Vec<Token>) {
    // Prefixes.
    while start < end && end - start > 1 && PREFIXES.contains(&text[start]) {
        out.push(Token { start, end: start + 1, kind: Kind::Opening });
        start += 1;
    }
    // Suffixes, peeled from the end, emitted afterwards in text order.
    let mut suffixes = Vec::new();
    let mut stop = end;
    while stop > start {
        let w = &text[start..stop];
        let last = w[w.len() - 1];
        if w.len() > 1 && SUFFIXES.contains(&last) {
            suffixes.push(Token { start: stop - 1, end: stop, kind: classify(&[last]) });
            stop -= 1;
            continue;
        }
        if last == '.' {
            let dots = w.iter().rev().take_while(|&&c| c == '.').count();
            if dots >= 2 {
                // An ellipsis is one token and ends nothing.
                if dots == w.len() {
                    break;
                }
                suffixes.push(Token { start: stop - dots, end: stop, kind: Kind::Punct });
                stop -= dots;
                continue;
            }
            if w.len() == 1 {
                break;
            }
            let s: String = w.iter().collect();
            if ABBREVIATIONS.contains(&s.as_str()) {
                break;
            }
            let prev = w[w.len() - 2];
            let two_caps = w.len() >= 3 && w[w.len() - 3].is_uppercase() && prev.is_uppercase();
            if prev.is_numeric() || prev.is_lowercase() || "%²-+".contains(prev) || is_punct_char(prev) || two_caps {
                suffixes.push(Token { start: stop - 1, end: stop, kind: Kind::Terminal });
                stop -= 1;
                continue;
            }
        }
        break;
    }
    // Infix periods between a lowercase and an uppercase letter: `end.Next`.
    let mut piece = start;
    for i in start + 1..stop.saturating_sub(1) {
        if text[i] == '.' && text[i - 1].is_lowercase() && text[i + 1].is_uppercase() {
            out.push(Token { start: piece, end: i, kind: classify(&text[piece..i]) });
            out.push(Token { start: i, end: i + 1, kind: Kind::Terminal });
            piece = i + 1;
        }
    }
    if piece < stop {
        out.push(Token { start: piece, end: stop, kind: classify(&text[piece..stop]) });
    }
    out.extend(suffixes.into_iter().rev());
}

fn tokenize(text: &[char]) -> Vec<Token> {
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < text.len() {
        if text[i].is_whitespace() {
            i += 1;
            continue;
        }
        let start = i;
        while i < text.len() && !text[i].is_whitespace() {
            i += 1;
        }
        split_word(text, start, i, &mut tokens);
    }
    tokens
}

/// Character spans `[start, end)` of the sentences of `text`, in Unicode scalar values, without the
/// whitespace between sentences. Empty or blank text has no sentences.
pub fn split_sentences(text: &str) -> Vec<(u32, u32)> {
    let chars: Vec<char> = text.chars().collect();
    let tokens = tokenize(&chars);
    let mut spans = Vec::new();
    let Some(first) = tokens.first() else { return spans };
    let (mut start, mut end) = (first.start, first.end);
    let mut seen_terminal = false;
    for t in &tokens {
        if seen_terminal && matches!(t.kind, Kind::Word | Kind::Opening) {
            spans.push((start as u32, end as u32));
            start = t.start;
            seen_terminal = false;
        } else if t.kind == Kind::Terminal {
            seen_terminal = true;
        }
        end = t.end;
    }
    spans.push((start as u32, end as u32));
    spans
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sentences(text: &str) -> Vec<String> {
        let chars: Vec<char> = text.chars().collect();
        split_sentences(text).into_iter().map(|(s, e)| chars[s as usize..e as usize].iter().collect()).collect()
    }

    #[test]
    fn plain_sentences() {
        assert_eq!(sentences("It rained. We left!  Did you? Yes"), ["It rained.", "We left!", "Did you?", "Yes"]);
        assert!(sentences("").is_empty());
        assert!(sentences("   \n").is_empty());
        assert_eq!(sentences("No final stop"), ["No final stop"]);
    }

    #[test]
    fn abbreviations_and_initials_do_not_end_sentences() {
        assert_eq!(
            sentences("Mr. Smith met Dr. Jones in the U.S. last year. They talked."),
            ["Mr. Smith met Dr. Jones in the U.S. last year.", "They talked."]
        );
        assert_eq!(sentences("John F. Kennedy was born in 1917."), ["John F. Kennedy was born in 1917."]);
        assert_eq!(sentences("Fruit, e.g. apples, is sold by Acme Inc. in Ohio."), [
            "Fruit, e.g. apples, is sold by Acme Inc. in Ohio."
        ]);
    }

    #[test]
    fn decimals_and_numbers() {
        assert_eq!(sentences("Pi is 3.14 roughly. It grew 2.5%. Then it fell."), [
            "Pi is 3.14 roughly.",
            "It grew 2.5%.",
            "Then it fell."
        ]);
        assert_eq!(sentences("It cost $5.5 million. Sales rose."), ["It cost $5.5 million.", "Sales rose."]);
        assert_eq!(sentences("He joined NATO. Then he left."), ["He joined NATO.", "Then he left."]);
    }

    #[test]
    fn quotes_and_brackets() {
        assert_eq!(sentences("He said \"Stop.\" She stopped."), ["He said \"Stop.\"", "She stopped."]);
        assert_eq!(sentences("It ended (finally.) Next came."), ["It ended (finally.)", "Next came."]);
        assert_eq!(sentences("He left. \"Why?\" she asked."), ["He left.", "\"Why?\"", "she asked."]);
        assert_eq!(sentences("“Go!” he said. (See below.) Done."), ["“Go!”", "he said.", "(See below.)", "Done."]);
    }

    #[test]
    fn ellipses_infix_and_repeated_marks() {
        assert_eq!(sentences("Wait... then go. Fine"), ["Wait... then go.", "Fine"]);
        assert_eq!(sentences("It ended.Next it began."), ["It ended.", "Next it began."]);
        assert_eq!(sentences("Really?! Yes!!"), ["Really?!", "Yes!!"]);
    }

    #[test]
    fn non_ascii_offsets_are_characters() {
        let text = "Zürich liegt am See. Über 400 000 Menschen wohnen dort。東京は大きい。";
        let spans = split_sentences(text);
        let chars: Vec<char> = text.chars().collect();
        let got: Vec<String> = spans.iter().map(|&(s, e)| chars[s as usize..e as usize].iter().collect()).collect();
        assert_eq!(got, ["Zürich liegt am See.", "Über 400 000 Menschen wohnen dort。東京は大きい。"]);
        assert_eq!(spans[1].0, 21);
    }
}
