//! Aliyun's XML rendering of a JSON answer: every object member is an
//! element, and a list becomes its element repeated — `"Regions":{"Region":
//! [a, b]}` is `<Regions><Region>a</Region><Region>b</Region></Regions>`.

use serde_json::Value;

/// `body` as an XML document rooted at `<root>`.
pub(crate) fn document(root: &str, body: &Value) -> String {
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>");
    element(&mut out, root, body);
    out
}

fn element(out: &mut String, name: &str, value: &Value) {
    match value {
        // A list has no element of its own: its items repeat the name.
        Value::Array(items) => {
            for item in items {
                element(out, name, item);
            }
        }
        Value::Object(members) => {
            open(out, name);
            for (key, member) in members {
                element(out, key, member);
            }
            close(out, name);
        }
        Value::Null => {
            open(out, name);
            close(out, name);
        }
        Value::String(text) => {
            open(out, name);
            escape(out, text);
            close(out, name);
        }
        Value::Bool(_) | Value::Number(_) => {
            open(out, name);
            out.push_str(&value.to_string());
            close(out, name);
        }
    }
}

fn open(out: &mut String, name: &str) {
    out.push('<');
    out.push_str(name);
    out.push('>');
}

fn close(out: &mut String, name: &str) {
    out.push_str("</");
    out.push_str(name);
    out.push('>');
}

fn escape(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn lists_repeat_their_element_and_text_is_escaped() {
        let body = json!({
            "Regions": {"Region": [{"RegionId": "a"}, {"RegionId": "b&<c>"}]},
            "Empty": {"Item": []},
            "TotalCount": 2,
        });
        let doc = document("DescribeRegionsResponse", &body);
        assert!(
            doc.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?><DescribeRegionsResponse>")
        );
        assert!(doc.ends_with("</DescribeRegionsResponse>"));
        assert!(doc.contains(
            "<Regions><Region><RegionId>a</RegionId></Region>\
             <Region><RegionId>b&amp;&lt;c&gt;</RegionId></Region></Regions>"
        ));
        assert!(doc.contains("<Empty></Empty>"));
        assert!(doc.contains("<TotalCount>2</TotalCount>"));
    }
}
