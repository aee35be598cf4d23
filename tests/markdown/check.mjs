#!/usr/bin/env node
// Parses posts with the markdown parsers Mattermost's clients use and prints what each one
// made of them, as JSON, for tests/markdown_corpus.rs and tests/real_mattermost_markdown.rs
// to judge. README.md beside this file says which parser is whose and how close it is.
//
//   node tests/markdown/check.mjs [FILE]     # FILE, or standard input when absent or "-"
//
// Input: a JSON array of posts `{"name": ..., "message": ...}`.
// Output: a JSON array, one entry per post, in order: `{"name", "parsers": {PARSER: TREE}}`
// where TREE is
//   code:          [{kind: "block" | "span", text}]   every code node, with its literal text
//   links:         [{dest, text, autolink}]            links; `autolink` when the text is the
//                                                      destination (bare URLs, <url>, emails,
//                                                      and the plugin's own [url](url))
//   images:        [{dest, alt}]
//   html:          [text]                              raw HTML nodes (inline or block)
//   headings, block_quotes, lists, tables:  [text]    the text of each such node
//   thematic_breaks: n
//   at_mentions, channel_links, hashtags:   [name]    Mattermost's own nodes (mobile parser)
//   text:          [text]                              every text run outside code
//   status_lines:  [text]                              ": ..." after a strong "Status"
//   mentions:      [word]                              @words outside code, split the way
//                                                      the server splits words for mentions
//   url_like:      [text]                              text runs outside links and code
//                                                      that the webapp's wider URL
//                                                      autolinking could turn into links
//   skeleton:      [token]                             the document outside code, in order:
//                                                      node types and trimmed text runs
//
// A parser that throws gives `{error: "..."}` for that post instead of a TREE.

import { readFileSync } from "node:fs";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const commonmark = require("@mattermost/commonmark");
const marked036 = require("marked-0.3.6");
const marked070 = require("marked-0.7.0");

// The options Mattermost's webapp passes to its marked fork (webapp/channels/src/utils/
// markdown/index.ts): sanitize, gfm, tables, no mangling.
const MARKED_OPTIONS = { sanitize: true, gfm: true, tables: true, mangle: false, breaks: false };

function readInput() {
  const file = process.argv[2];
  const text = !file || file === "-" ? readFileSync(0, "utf8") : readFileSync(file, "utf8");
  const posts = JSON.parse(text);
  if (!Array.isArray(posts)) throw new Error("input must be a JSON array of {name, message}");
  return posts;
}

// ---------------------------------------------------------------------------------------
// What a tree says, collected the same way whichever parser made it.

function emptyTree() {
  return {
    code: [],
    links: [],
    images: [],
    html: [],
    headings: [],
    block_quotes: [],
    lists: [],
    tables: [],
    thematic_breaks: 0,
    at_mentions: [],
    channel_links: [],
    hashtags: [],
    text: [],
    status_lines: [],
    mentions: [],
    url_like: [],
    skeleton: [],
  };
}

// How Mattermost's server finds mentions in the text outside code (server: app/
// mention_parser / model ExplicitMentions.processText, from 5.x through 6.7): it splits on
// every character that is not a letter, a number or one of `:.-_@`, trims `:.-_` on the
// left, and then also tries the word cut at `.-:`. Zero-width characters (U+200B..U+200D,
// U+2060, U+FEFF) are neither letters nor numbers, so they separate words: `\u200b@channel`
// is the word `@channel`. Look-alikes (U+FF20, U+FE6B) are not `@`.
function mentionWords(text) {
  const found = [];
  for (const raw of text.split(/[^:.\-_@\p{L}\p{N}]+/u)) {
    if (!raw || (raw[0] === ":" && raw[raw.length - 1] === ":")) continue;
    const word = raw.replace(/^[:.\-_]+/, "");
    const cuts = new Set([word, ...word.split(/[.\-:]/)].map((piece) => piece.replace(/[.\-:_]+$/, "")));
    for (const cut of cuts) {
      if (cut.length > 1 && cut[0] === "@") found.push(cut);
    }
  }
  return found;
}

// Text a wider URL autolinker (the webapp's fork links schemes, `www.` and `host.tld/`)
// could turn into a link.
const URL_LIKE = /(?:\b[a-z][a-z0-9.+-]*:\/{0,3}[^\s]|\bwww\d{0,3}\.|[\p{L}\d.-]+\.\p{L}{2,}\/|\b[\w.+-]+@[\w-]+\.[\w.-]+)/iu;

function finish(tree, runs) {
  // `runs` are the text runs outside code, each cut where the server's Inspect would cut
  // its buffer (at any node that is not text).
  for (const run of runs) {
    if (run.trim()) tree.text.push(run);
    tree.mentions.push(...mentionWords(run));
  }
  return tree;
}

// ---------------------------------------------------------------------------------------
// @mattermost/commonmark: Mattermost's fork of commonmark.js, the mobile app's parser and
// the closest to the server's own Go parser (a CommonMark port).

function commonmarkTree(message) {
  const parser = new commonmark.Parser({ minimumHashtagLength: 3 });
  const doc = parser.parse(message);
  const tree = emptyTree();
  const runs = [];
  let run = "";
  const flush = () => {
    runs.push(run);
    run = "";
  };
  const textOf = (node) => {
    let out = "";
    const w = node.walker();
    let e;
    while ((e = w.next())) {
      if (!e.entering) continue;
      const n = e.node;
      if (n.type === "text" || n.type === "code" || n.type === "code_block") out += n.literal ?? "";
      else if (n.type === "softbreak" || n.type === "linebreak") out += "\n";
      else if (n.type === "at_mention") out += "@" + n.mentionName;
      else if (n.type === "channel_link") out += "~" + n.channelName;
      else if (n.type === "hashtag") out += "#" + n.hashtag;
    }
    return out;
  };

  const walker = doc.walker();
  let event;
  while ((event = walker.next())) {
    const { node, entering } = event;
    const type = node.type;
    if (!entering) {
      if (node.isContainer && type !== "document") tree.skeleton.push("/" + type);
      continue;
    }
    switch (type) {
      case "text":
        run += node.literal;
        if (node.literal.trim()) tree.skeleton.push(node.literal.trim());
        if (URL_LIKE.test(node.literal) && !insideLink(node)) tree.url_like.push(node.literal);
        continue;
      case "softbreak":
      case "linebreak":
        run += "\n";
        continue;
      case "at_mention":
        // The server sees plain text here: it has no at_mention node.
        run += "@" + node.mentionName;
        tree.at_mentions.push(node.mentionName);
        tree.skeleton.push("@" + node.mentionName);
        continue;
      case "channel_link":
        run += "~" + node.channelName;
        tree.channel_links.push(node.channelName);
        tree.skeleton.push("~" + node.channelName);
        continue;
      case "hashtag":
        run += "#" + node.hashtag;
        tree.hashtags.push(node.hashtag);
        tree.skeleton.push("#" + node.hashtag);
        continue;
      case "emoji":
        run += ":" + (node.emojiName ?? "") + ":";
        continue;
      default:
        break;
    }
    flush();
    switch (type) {
      case "code":
        tree.code.push({ kind: "span", text: node.literal });
        tree.skeleton.push("code_span");
        break;
      case "code_block":
        tree.code.push({ kind: "block", text: node.literal });
        tree.skeleton.push("code_block");
        break;
      case "link":
        tree.links.push(linkOf(node.destination, textOf(node)));
        tree.skeleton.push("link " + node.destination);
        break;
      case "image":
        tree.images.push({ dest: node.destination, alt: textOf(node) });
        tree.skeleton.push("image " + node.destination);
        break;
      case "html_inline":
      case "html_block":
        tree.html.push(node.literal);
        tree.skeleton.push(type);
        break;
      case "heading":
        tree.headings.push(textOf(node));
        break;
      case "block_quote":
        tree.block_quotes.push(textOf(node));
        break;
      case "list":
        tree.lists.push(textOf(node));
        break;
      case "table":
        tree.tables.push(textOf(node));
        break;
      case "thematic_break":
        tree.thematic_breaks += 1;
        tree.skeleton.push(type);
        break;
      case "strong":
        if (textOf(node) === "Status") {
          const line = statusAfter(node.next, (n) => n.next, (n) =>
            n.type === "softbreak" || n.type === "linebreak" ? null : textOf(n));
          if (line !== null) tree.status_lines.push(line);
        }
        break;
      default:
        break;
    }
    if (node.isContainer && type !== "document") tree.skeleton.push(type);
  }
  flush();
  return finish(tree, runs);
}

function linkOf(dest, text) {
  const autolink = dest !== null && [text, "mailto:" + text, "http://" + text].includes(dest);
  return { dest, text, autolink };
}

function insideLink(node) {
  for (let p = node.parent; p; p = p.parent) if (p.type === "link" || p.type === "image") return true;
  return false;
}

// The rest of a status line: the text after `**Status**` up to the end of its line, when it
// starts with ":" (`**Status**: ✅ APPROVED by @alice` gives ": ✅ APPROVED by @alice").
function statusAfter(first, next, text) {
  let line = "";
  for (let n = first; n !== null && n !== undefined; n = next(n)) {
    const t = text(n);
    if (t === null) break;
    const cut = t.indexOf("\n");
    if (cut >= 0) {
      line += t.slice(0, cut);
      break;
    }
    line += t;
  }
  return line.startsWith(":") ? line : null;
}

// ---------------------------------------------------------------------------------------
// marked (0.3.x architecture): no AST for inlines, so the renderer is instrumented. Every
// renderer call returns a token naming a node it records; the node's children are the
// strings marked passed in, which hold text and the tokens of nested nodes. With
// `sanitize: true` every raw tag of the input is escaped into text, so all structure in the
// output comes from renderer calls.

const OPEN = "\uE000";
const CLOSE = "\uE001";

function markedTree(marked, message) {
  if (message.includes(OPEN) || message.includes(CLOSE)) {
    throw new Error("the message holds U+E000/U+E001, which this judge uses as markers");
  }
  const nodes = [];
  const node = (type, props, ...children) => {
    nodes.push({ type, props, children: children.filter((c) => c !== undefined && c !== null) });
    return OPEN + (nodes.length - 1) + CLOSE;
  };
  const renderer = new marked.Renderer();
  renderer.code = (code, lang) => node("code_block", { text: code, lang: lang ?? null });
  renderer.blockquote = (quote) => node("block_quote", {}, quote);
  renderer.html = (html) => node("html", { text: html });
  renderer.heading = (text, level) => node("heading", { level }, text);
  renderer.hr = () => node("thematic_break", {});
  renderer.list = (body, ordered) => node("list", { ordered: !!ordered }, body);
  renderer.listitem = (text) => node("item", {}, text);
  renderer.checkbox = (checked) => node("checkbox", { checked: !!checked });
  renderer.paragraph = (text) => node("paragraph", {}, text);
  renderer.table = (header, body) => node("table", {}, header, body);
  renderer.tablerow = (content) => node("table_row", {}, content);
  renderer.tablecell = (content) => node("table_cell", {}, content);
  renderer.strong = (text) => node("strong", {}, text);
  renderer.em = (text) => node("emph", {}, text);
  renderer.codespan = (text) => node("code", { text: unescapeHtml(text) });
  renderer.br = () => node("linebreak", {});
  renderer.del = (text) => node("del", {}, text);
  renderer.link = (href, title, text) => node("link", { dest: href === null ? null : unescapeHtml(href) }, text);
  renderer.image = (href, title, text) =>
    node("image", { dest: href === null ? null : unescapeHtml(href), alt: unescapeHtml(text ?? "") });
  renderer.text = (text) => text;

  // marked 0.7.0 warns on every call that `sanitize` is deprecated; the webapp's fork still
  // uses it, so the warning says nothing here.
  const warn = console.warn;
  console.warn = () => {};
  let out;
  try {
    out = marked(message, { ...MARKED_OPTIONS, renderer });
  } finally {
    console.warn = warn;
  }
  const root = { type: "document", props: {}, children: [out] };
  const tree = emptyTree();
  const runs = [];
  let run = "";
  const flush = () => {
    runs.push(run);
    run = "";
  };

  // Children as a list of {text} and {node} pieces.
  const pieces = (n) => {
    const list = [];
    for (const child of n.children) {
      const re = new RegExp(OPEN + "(\\d+)" + CLOSE, "g");
      let last = 0;
      let m;
      while ((m = re.exec(child))) {
        if (m.index > last) list.push({ text: unescapeHtml(child.slice(last, m.index)) });
        list.push({ node: nodes[Number(m[1])] });
        last = m.index + m[0].length;
      }
      if (last < child.length) list.push({ text: unescapeHtml(child.slice(last)) });
    }
    return list;
  };
  const textOf = (n) =>
    pieces(n)
      .map((p) => (p.text !== undefined ? p.text : leafText(p.node) ?? textOf(p.node)))
      .join("");
  const leafText = (n) => (n.type === "code" || n.type === "code_block" ? n.props.text : n.type === "linebreak" ? "\n" : null);

  const visit = (n, inLink) => {
    const list = pieces(n);
    for (let i = 0; i < list.length; i++) {
      const p = list[i];
      if (p.text !== undefined) {
        run += p.text;
        if (p.text.trim()) tree.skeleton.push(p.text.trim().replace(/\s+/g, " "));
        if (!inLink && URL_LIKE.test(p.text)) tree.url_like.push(p.text);
        continue;
      }
      const c = p.node;
      if (c.type === "linebreak") {
        run += "\n";
        continue;
      }
      flush();
      switch (c.type) {
        case "code":
          tree.code.push({ kind: "span", text: c.props.text });
          tree.skeleton.push("code_span");
          continue;
        case "code_block":
          tree.code.push({ kind: "block", text: c.props.text });
          tree.skeleton.push("code_block");
          continue;
        case "html":
          tree.html.push(c.props.text);
          tree.skeleton.push("html");
          continue;
        case "thematic_break":
          tree.thematic_breaks += 1;
          tree.skeleton.push("thematic_break");
          continue;
        case "link":
          tree.links.push(linkOf(c.props.dest, textOf(c)));
          tree.skeleton.push("link " + c.props.dest);
          break;
        case "image":
          tree.images.push({ dest: c.props.dest, alt: c.props.alt });
          tree.skeleton.push("image " + c.props.dest);
          // The alt text is text a reader sees.
          run += c.props.alt;
          flush();
          continue;
        case "heading":
          tree.headings.push(textOf(c));
          break;
        case "block_quote":
          tree.block_quotes.push(textOf(c));
          break;
        case "list":
          tree.lists.push(textOf(c));
          break;
        case "table":
          tree.tables.push(textOf(c));
          break;
        case "strong":
          if (textOf(c) === "Status") {
            const rest = list.slice(i + 1);
            const line = statusAfter(0, (k) => (k + 1 < rest.length ? k + 1 : null), (k) => {
              const q = rest[k];
              if (q.text !== undefined) return q.text;
              return q.node.type === "linebreak" ? null : leafText(q.node) ?? textOf(q.node);
            });
            if (line !== null) tree.status_lines.push(line);
          }
          break;
        default:
          break;
      }
      tree.skeleton.push(c.type);
      visit(c, inLink || c.type === "link");
      flush();
      tree.skeleton.push("/" + c.type);
    }
  };
  visit(root, false);
  flush();
  return finish(tree, runs);
}

function unescapeHtml(s) {
  return s.replace(/&(#x[0-9a-f]+|#\d+|amp|lt|gt|quot|apos|#39|nbsp|commat);/gi, (_, e) => {
    const k = e.toLowerCase();
    if (k[0] === "#") {
      const code = k[1] === "x" ? parseInt(k.slice(2), 16) : parseInt(k.slice(1), 10);
      try {
        return String.fromCodePoint(code);
      } catch {
        return "\uFFFD";
      }
    }
    return { amp: "&", lt: "<", gt: ">", quot: '"', apos: "'", nbsp: "\u00a0", commat: "@" }[k];
  });
}

// ---------------------------------------------------------------------------------------

const PARSERS = {
  "@mattermost/commonmark@0.31.2-0": commonmarkTree,
  "marked@0.3.6": (m) => markedTree(marked036, m),
  "marked@0.7.0": (m) => markedTree(marked070, m),
};

const spent = Object.fromEntries(Object.keys(PARSERS).map((p) => [p, 0]));
const results = readInput().map(({ name, message }) => {
  if (typeof message !== "string") throw new Error(`post ${name}: message must be a string`);
  const parsers = {};
  for (const [parser, parse] of Object.entries(PARSERS)) {
    const start = performance.now();
    try {
      parsers[parser] = parse(message);
    } catch (e) {
      parsers[parser] = { error: String(e && e.stack ? e.stack : e) };
    }
    spent[parser] += performance.now() - start;
  }
  return { name, parsers };
});
if (process.env.CHECK_TIMING) {
  process.stderr.write(`milliseconds per parser: ${JSON.stringify(spent)}\n`);
}
process.stdout.write(JSON.stringify(results));
process.stdout.write("\n");
