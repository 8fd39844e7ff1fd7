#!/usr/bin/env python3
"""Parses what the chart module writes and prints it as JSON for the specs.

    markup.py svg FILE    strict XML parse (any well-formedness error fails);
                          prints the element tree: {tag, ns, attrs, text, children}
    markup.py html FILE   HTML5 parse; prints the doctype, every element with its
                          attributes and text, nesting errors, and the tree of each
                          inline <svg> parsed again as strict XML

Exit status 1 with {"error": ...} when the document does not parse."""
import json
import re
import sys
import xml.etree.ElementTree as ET
from html.parser import HTMLParser

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


def tree(element):
    ns, _, tag = element.tag[1:].partition("}") if element.tag.startswith("{") else ("", "", element.tag)
    return {
        "tag": tag,
        "ns": ns,
        "attrs": dict(sorted(element.attrib.items())),
        "text": "".join(element.itertext()),
        "own": element.text or "",
        "children": [tree(child) for child in element],
    }


def parse_svg(text):
    return tree(ET.fromstring(text.encode("utf-8")))


class Page(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.doctype = None
        self.stack = []
        self.elements = []
        self.errors = []

    def handle_decl(self, decl):
        self.doctype = decl

    def handle_starttag(self, tag, attrs):
        element = {"tag": tag, "attrs": dict(attrs), "text": "", "path": [e["tag"] for e in self.stack]}
        self.elements.append(element)
        if tag not in VOID:
            self.stack.append(element)

    def handle_startendtag(self, tag, attrs):
        self.elements.append({"tag": tag, "attrs": dict(attrs), "text": "", "path": [e["tag"] for e in self.stack]})

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        if not self.stack or self.stack[-1]["tag"] != tag:
            self.errors.append("unexpected </%s> inside %s" % (tag, [e["tag"] for e in self.stack]))
            return
        self.stack.pop()

    def handle_data(self, data):
        for element in self.stack:
            element["text"] += data


def main(argv):
    kind, path = argv
    with open(path, "rb") as f:
        text = f.read().decode("utf-8")  # strict: invalid UTF-8 fails
    if kind == "svg":
        print(json.dumps(parse_svg(text)))
        return
    page = Page()
    page.feed(text)
    page.close()
    if page.stack:
        page.errors.append("unclosed: %s" % [e["tag"] for e in page.stack])
    svgs = [parse_svg(m) for m in re.findall(r"<svg[\s>].*?</svg>", text, re.S)]
    print(json.dumps({"doctype": page.doctype, "elements": page.elements, "errors": page.errors, "svgs": svgs}))


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except (ET.ParseError, UnicodeDecodeError, ValueError) as e:
        print(json.dumps({"error": "%s: %s" % (type(e).__name__, e)}))
        sys.exit(1)
