//! Cutting a multi-document YAML stream into independently parseable parts.
//!
//! The YAML parser reads about 10–15 MB/s, so a 5,000-namespace export (hundreds of MB) is
//! parsed on every core: the stream is cut at its document-start markers and the parts are
//! parsed separately. That is exact, not a heuristic: YAML forbids a line beginning with
//! `---` followed by a space, a tab or the line end inside any scalar or collection
//! (`c-forbidden`), so such a line always starts a new document. Parts keep their directives
//! (`%YAML`, `%TAG`): the stream is never cut between a directive and its document.

/// A contiguous part of a stream holding one or more whole documents.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Part<'a> {
    /// The text of the part.
    pub text: &'a str,
    /// 1-based line of the stream on which the part starts.
    pub first_line: u64,
}

/// Whether `line` (without its line break) is a document-start marker.
fn is_document_start(line: &str) -> bool {
    line.strip_prefix("---")
        .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t', '\r']))
}

/// Whether a line holds something other than blank space or a comment.
fn has_content(line: &str) -> bool {
    let t = line.trim_start();
    !(t.is_empty() || t.starts_with('#'))
}

/// Cuts `text` into parts, each a whole number of documents, in order. A marker line only
/// starts a new part when the current one already holds document content and no directive
/// (so comments before the first marker, and directives, stay with the document they
/// precede).
pub fn split(text: &str) -> Vec<Part<'_>> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut start_line = 1;
    // Document content seen in the current part.
    let mut content = false;
    // A directive is waiting for its document's marker.
    let mut directive = false;
    // A document end marker (`...`) was seen: directives of the next document may follow.
    let mut ended = false;
    let mut pos = 0;
    for (line_no, line) in (1..).zip(text.split_inclusive('\n')) {
        let bare = line.trim_end_matches(['\n', '\r']);
        if is_document_start(bare) {
            if content && !directive {
                parts.push(Part {
                    text: &text[start..pos],
                    first_line: start_line,
                });
                start = pos;
                start_line = line_no;
                content = false;
            }
            directive = false;
            ended = false;
            // Content on the marker line itself (`--- {a: 1}`, `--- !tag`) counts.
            content |= has_content(&bare[3..]);
        } else if bare.starts_with('%') && (!content || ended) {
            directive = true;
        } else if is_document_end(bare) {
            ended = true;
        } else if has_content(bare) {
            content = true;
        }
        pos += line.len();
    }
    if start < text.len() || parts.is_empty() {
        parts.push(Part {
            text: &text[start..],
            first_line: start_line,
        });
    }
    parts
}

/// Whether a line is a document end marker (`...`).
fn is_document_end(line: &str) -> bool {
    line == "..." || line.starts_with("... ")
}

/// Whether `text` holds no document at all: only blank lines, comments, markers and
/// directives. An empty file is usually an export that failed (`kubectl get … > file` with
/// an error on stderr), not an inventory without objects.
pub fn is_blank(text: &str) -> bool {
    text.lines().all(|line| {
        let bare = line.trim_end_matches('\r');
        if is_document_start(bare) {
            return !has_content(&bare[3..]);
        }
        !has_content(bare) || is_document_end(bare) || bare.starts_with('%')
    })
}

/// The line on which the first document of `part` starts: its first content line (a
/// marker line counts when it holds content, `--- {a: 1}`), else the part's first line.
pub fn content_line(part: &Part<'_>) -> u64 {
    (part.first_line..)
        .zip(part.text.lines())
        .find(|(_, line)| {
            let bare = line.trim_end_matches('\r');
            if is_document_start(bare) {
                has_content(&bare[3..])
            } else {
                has_content(bare) && !is_document_end(bare) && !bare.starts_with('%')
            }
        })
        .map_or(part.first_line, |(n, _)| n)
}

/// The first line holding Helm template syntax where YAML would read a value, with the
/// template: `{{` starting a line (`{{- if .Values.x }}`), a list item or a mapping value
/// (`name: {{ .Values.name }}`). There YAML reads a flow mapping keyed by a flow mapping,
/// which no Kubernetes object has, so the parser fails with words about scalars; quoted
/// templates (`"{{ … }}"`) are plain strings to it.
pub fn template_line(text: &str) -> Option<(u64, String)> {
    (1..)
        .zip(text.lines())
        .find(|(_, line)| starts_value_with_template(line))
        .map(|(n, line)| (n, template_of(line)))
}

/// Whether a line starts a value (or itself) with `{{`.
fn starts_value_with_template(line: &str) -> bool {
    let mut t = line.trim_start();
    while let Some(rest) = t.strip_prefix('-').filter(|r| r.starts_with([' ', '\t'])) {
        t = rest.trim_start();
    }
    t.starts_with("{{")
        || t.split_once(": ")
            .is_some_and(|(_, value)| value.trim_start().starts_with("{{"))
}

/// The first `{{ … }}` of a line (to the line end when unclosed), at most 60 characters.
pub fn template_of(line: &str) -> String {
    let Some(start) = line.find("{{") else {
        return String::new();
    };
    let rest = &line[start..];
    let end = rest.find("}}").map_or(rest.len(), |e| e + 2);
    let template = rest[..end].trim_end();
    if template.chars().count() > 60 {
        format!("{}…", template.chars().take(59).collect::<String>())
    } else {
        template.to_string()
    }
}

/// Splits `parts` into at most `n` runs of consecutive parts of similar size in bytes.
pub fn balance<'p, 'a>(parts: &'p [Part<'a>], n: usize) -> Vec<&'p [Part<'a>]> {
    let total: usize = parts.iter().map(|p| p.text.len()).sum();
    let n = n.max(1);
    let target = total.div_ceil(n).max(1);
    let mut runs = Vec::with_capacity(n);
    let mut begin = 0;
    let mut size = 0;
    for (i, p) in parts.iter().enumerate() {
        size += p.text.len();
        if size >= target && runs.len() + 1 < n {
            runs.push(&parts[begin..=i]);
            begin = i + 1;
            size = 0;
        }
    }
    if begin < parts.len() {
        runs.push(&parts[begin..]);
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn whole(text: &str) -> Vec<Value> {
        serde_saphyr::from_multiple(text).unwrap()
    }

    fn by_parts(text: &str) -> Vec<Value> {
        split(text)
            .iter()
            .flat_map(|p| serde_saphyr::from_multiple::<Value>(p.text).unwrap())
            .collect()
    }

    #[test]
    fn parts_parse_to_the_same_documents_as_the_whole_stream() {
        let cases = [
            "a: 1\n---\nb: 2\n",
            "---\na: 1\n---\nb: 2\n---\n",
            "# leading comment\n---\na: 1\n--- # trailing\nb: 2\n",
            "a: |\n  ---\n  not a marker\nb: 2\n---\nc: 3\n",
            "a: 1\n...\n%YAML 1.2\n---\nb: 2\n",
            "%YAML 1.2\n---\na: 1\n---\nb: [1,\n  2]\n",
            "--- {a: 1}\n--- {b: 2}\n",
            "a: 1\r\n---\r\nb: 2\r\n",
            "a: 1\n----: 2\n",
            "a: 1\n---\n\n---\nb: 2\n",
            "{\"kind\": \"List\", \"items\": []}",
            "",
        ];
        for text in cases {
            assert_eq!(by_parts(text), whole(text), "{text:?}");
            let joined: String = split(text).iter().map(|p| p.text).collect();
            assert_eq!(joined, text, "parts cover the text exactly");
        }
    }

    #[test]
    fn parts_start_at_markers_with_their_line_numbers() {
        let text = "a: 1\n---\nb: 2\nc: 3\n---\nd: 4\n";
        let parts = split(text);
        assert_eq!(
            parts,
            vec![
                Part {
                    text: "a: 1\n",
                    first_line: 1
                },
                Part {
                    text: "---\nb: 2\nc: 3\n",
                    first_line: 2
                },
                Part {
                    text: "---\nd: 4\n",
                    first_line: 5
                },
            ]
        );
    }

    #[test]
    fn blank_texts_hold_no_document() {
        for text in [
            "",
            "\n\n",
            "# only a comment\n---\n",
            "---\n...\n",
            "%YAML 1.2\n---\r\n",
        ] {
            assert!(is_blank(text), "{text:?}");
        }
        for text in ["a: 1\n", "--- {a: 1}\n", "# c\n---\nkind: List\n", "~\n"] {
            assert!(!is_blank(text), "{text:?}");
        }
    }

    #[test]
    fn a_part_starts_at_its_first_content_line() {
        let text = "# header\n---\n\napiVersion: v1\n---\n# c\nkind: x\n--- {a: 1}\n";
        let lines: Vec<u64> = split(text).iter().map(content_line).collect();
        assert_eq!(lines, [4, 7, 8]);
        assert_eq!(content_line(&split("")[0]), 1);
    }

    #[test]
    fn helm_templates_are_found_where_yaml_reads_values() {
        assert_eq!(
            template_line("a: 1\nmetadata:\n  name: {{ .Values.name }}\n"),
            Some((3, "{{ .Values.name }}".to_string()))
        );
        assert_eq!(
            template_line("{{- if .Values.enabled }}\napiVersion: v1\n").map(|(l, _)| l),
            Some(1)
        );
        assert_eq!(
            template_line("ports:\n- - {{ .Values.port }}\n").map(|(l, _)| l),
            Some(2)
        );
        // Quoted, or inside a plain scalar: a string to YAML.
        assert_eq!(
            template_line("summary: \"{{ $labels.pod }} is down\"\n"),
            None
        );
        assert_eq!(template_line("name: web-{{ .Values.x }}\n"), None);
        assert_eq!(template_of("x {{ unclosed"), "{{ unclosed");
        assert!(template_of(&format!("{{{{ {} }}}}", "a".repeat(100))).ends_with('…'));
    }

    #[test]
    fn directives_stay_with_their_document() {
        let text = "a: 1\n...\n%YAML 1.2\n---\nb: 2\n";
        assert_eq!(split(text).len(), 1);
    }

    #[test]
    fn balance_keeps_order_and_every_part() {
        let text: String = (0..10).map(|i| format!("---\nk{i}: {i}\n")).collect();
        let parts = split(&text);
        assert_eq!(parts.len(), 10);
        for n in [1, 2, 3, 16] {
            let runs = balance(&parts, n);
            assert!(runs.len() <= n && !runs.is_empty());
            let flat: Vec<Part<'_>> = runs.iter().flat_map(|r| r.iter().copied()).collect();
            assert_eq!(flat, parts);
        }
    }
}
