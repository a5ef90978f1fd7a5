//! A printable PDF of the witnesses' summary: the same text, in Courier,
//! A4 pages, for officers and witnesses to sign on paper. A minimal PDF
//! 1.4 writer (ISO 32000-1 §7: objects, a cross-reference table, the
//! trailer) with the standard Courier font, so nothing is embedded.
//! Courier covers Latin-1 only: other characters (e.g. Chinese names in a
//! subject) print as `?`, and the plain-text summary stays the record.

/// Lines per A4 page at 9 pt with 11 pt leading.
const LINES_PER_PAGE: usize = 70;
/// Characters per line before wrapping.
const COLUMNS: usize = 100;

fn escape(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    for c in line.chars() {
        match c {
            '(' | ')' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            ' '..='~' => out.push(c),
            _ => out.push('?'),
        }
    }
    out
}

/// Renders `text` as a PDF document.
pub fn render(title: &str, text: &str) -> Vec<u8> {
    let mut lines: Vec<String> = Vec::new();
    for l in text.lines() {
        let chars: Vec<char> = l.chars().collect();
        if chars.is_empty() {
            lines.push(String::new());
        }
        for chunk in chars.chunks(COLUMNS) {
            lines.push(chunk.iter().collect());
        }
    }
    let pages: Vec<&[String]> = lines.chunks(LINES_PER_PAGE).collect();
    let pages = if pages.is_empty() { vec![&lines[..0]] } else { pages };
    // Objects: 1 catalog, 2 pages, 3 font, 4 info, then per page: page, content.
    let mut objects: Vec<String> = Vec::new();
    let kids: Vec<String> = (0..pages.len()).map(|i| format!("{} 0 R", 5 + 2 * i)).collect();
    objects.push("<< /Type /Catalog /Pages 2 0 R >>".into());
    objects.push(format!("<< /Type /Pages /Kids [{}] /Count {} >>", kids.join(" "), pages.len()));
    objects.push("<< /Type /Font /Subtype /Type1 /BaseFont /Courier /Encoding /WinAnsiEncoding >>".into());
    objects.push(format!("<< /Title ({}) /Producer (kms ceremony) >>", escape(title)));
    for (i, page) in pages.iter().enumerate() {
        let mut content = String::from("BT /F1 9 Tf 11 TL 42 800 Td\n");
        for l in page.iter() {
            content.push_str(&format!("({}) '\n", escape(l)));
        }
        content.push_str(&format!("ET\nBT /F1 8 Tf 42 28 Td (Page {} of {}) Tj ET\n", i + 1, pages.len()));
        objects.push(format!(
            "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Resources << /Font << /F1 3 0 R >> >> /Contents {} 0 R >>",
            6 + 2 * i
        ));
        objects.push(format!("<< /Length {} >>\nstream\n{content}endstream", content.len()));
    }
    let mut out = b"%PDF-1.4\n%\xE2\xE3\xCF\xD3\n".to_vec();
    let mut offsets = Vec::new();
    for (i, o) in objects.iter().enumerate() {
        offsets.push(out.len());
        out.extend_from_slice(format!("{} 0 obj\n{o}\nendobj\n", i + 1).as_bytes());
    }
    let xref = out.len();
    out.extend_from_slice(format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).as_bytes());
    for off in offsets {
        out.extend_from_slice(format!("{off:010} 00000 n \n").as_bytes());
    }
    out.extend_from_slice(
        format!("trailer\n<< /Size {} /Root 1 0 R /Info 4 0 R >>\nstartxref\n{xref}\n%%EOF\n", objects.len() + 1)
            .as_bytes(),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cross_references_point_at_their_objects_and_pages_split() {
        let text: String = (0..150).map(|i| format!("line {i} (with parens) and \\ and 城市\n")).collect();
        let pdf = render("t", &text);
        assert!(pdf.starts_with(b"%PDF-1.4\n%\xE2\xE3\xCF\xD3\n"));
        // Everything after the binary-marker comment is ASCII.
        let body = &pdf[15..];
        assert!(body.is_ascii());
        let s = format!("{}{}", " ".repeat(15), String::from_utf8_lossy(body));
        assert!(s.ends_with("%%EOF\n"));
        let startxref: usize =
            s.rsplit("startxref\n").next().and_then(|t| t.lines().next()).and_then(|n| n.parse().ok()).unwrap_or(0);
        assert!(s[startxref..].starts_with("xref\n"));
        let entries: Vec<&str> = s[startxref..].lines().skip(3).take_while(|l| l.ends_with(" n ")).collect();
        assert_eq!(entries.len(), 4 + 2 * 3, "150 lines make 3 pages");
        for (i, e) in entries.iter().enumerate() {
            let off: usize = e[..10].parse().unwrap_or(usize::MAX);
            assert!(s[off..].starts_with(&format!("{} 0 obj", i + 1)), "object {}", i + 1);
        }
        assert!(s.contains("(line 0 \\(with parens\\) and \\\\ and ??) '"));
        assert!(s.contains("/Count 3"));
        // Each stream's /Length is its byte length.
        for part in s.split("<< /Length ").skip(1) {
            let (len, rest) = part.split_once(" >>\nstream\n").unwrap_or(("0", ""));
            let len: usize = len.parse().unwrap_or(0);
            assert_eq!(&rest[len..len + 9], "endstream");
        }
    }
}
