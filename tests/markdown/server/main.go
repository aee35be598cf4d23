// Command server-judge parses posts with the Mattermost server's own markdown package
// (github.com/mattermost/mattermost-server/v6 v6.7.2, shared/markdown) and prints what the
// server's mention extraction reads in them, in the TREE shape of ../check.mjs (the keys
// this parser can say anything about).
//
// The server finds mentions by walking a post with markdown.Inspect and reading only Text
// nodes: each run of Text is split into words and checked, and any other node (a code span
// or block, a link, a line break, the end of a block) ends the run. This program walks the
// same way and splits words by the same rule, so its `mentions` are what the server would
// check against its users and @channel/@all/@here. The package knows paragraphs, lists,
// block quotes, fenced and indented code, links, images, autolinks and code spans; it has no
// headings, emphasis, tables or HTML.
//
// Built and run by ../judge.rs in a throwaway wrapper module (it is not part of the crate).
//
//	server-judge < posts.json > trees.json
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"unicode"

	"github.com/mattermost/mattermost-server/v6/shared/markdown"
)

type post struct {
	Name    string `json:"name"`
	Message string `json:"message"`
}

type code struct {
	Kind string `json:"kind"`
	Text string `json:"text"`
}

type link struct {
	Dest string `json:"dest"`
	Text string `json:"text"`
}

type image struct {
	Dest string `json:"dest"`
	Alt  string `json:"alt"`
}

type tree struct {
	Code        []code   `json:"code"`
	Links       []link   `json:"links"`
	Images      []image  `json:"images"`
	BlockQuotes []string `json:"block_quotes"`
	Lists       []string `json:"lists"`
	Text        []string `json:"text"`
	StatusLines []string `json:"status_lines"`
	Mentions    []string `json:"mentions"`
	Skeleton    []string `json:"skeleton"`
}

type result struct {
	Name    string           `json:"name"`
	Parsers map[string]*tree `json:"parsers"`
}

// Parser is the key this judge's trees have in the output.
const Parser = "mattermost-server@6.7.2"

func main() {
	var posts []post
	if err := json.NewDecoder(os.Stdin).Decode(&posts); err != nil {
		fmt.Fprintln(os.Stderr, "server-judge: input must be a JSON array of {name, message}:", err)
		os.Exit(2)
	}
	results := make([]result, 0, len(posts))
	for _, p := range posts {
		results = append(results, result{Name: p.Name, Parsers: map[string]*tree{Parser: judge(p.Message)}})
	}
	if err := json.NewEncoder(os.Stdout).Encode(results); err != nil {
		fmt.Fprintln(os.Stderr, "server-judge:", err)
		os.Exit(1)
	}
}

func judge(message string) *tree {
	t := &tree{}
	run := ""
	// The current line of the current paragraph as a reader sees it outside code, to find
	// status lines (this package has no emphasis: `**Status**:` stays text).
	line := ""
	endLine := func() {
		if rest, ok := strings.CutPrefix(line, "**Status**"); ok && strings.HasPrefix(rest, ":") {
			t.StatusLines = append(t.StatusLines, rest)
		}
		line = ""
	}
	flush := func() {
		if strings.TrimSpace(run) != "" {
			t.Text = append(t.Text, run)
		}
		t.Mentions = append(t.Mentions, mentionWords(run)...)
		run = ""
	}
	markdown.Inspect(message, func(node interface{}) bool {
		if text, ok := node.(*markdown.Text); ok {
			run += text.Text
			line += text.Text
			if s := strings.TrimSpace(text.Text); s != "" {
				t.Skeleton = append(t.Skeleton, s)
			}
			return false
		}
		flush()
		switch n := node.(type) {
		case nil, *markdown.Document:
		case *markdown.Paragraph:
			endLine()
			t.Skeleton = append(t.Skeleton, "paragraph")
		case *markdown.SoftLineBreak, *markdown.HardLineBreak:
			endLine()
		case *markdown.CodeSpan:
			t.Code = append(t.Code, code{Kind: "span", Text: n.Code})
			t.Skeleton = append(t.Skeleton, "code_span")
			line += "`code`"
		case *markdown.FencedCode:
			endLine()
			t.Code = append(t.Code, code{Kind: "block", Text: n.Code()})
			t.Skeleton = append(t.Skeleton, "code_block")
		case *markdown.IndentedCode:
			endLine()
			t.Code = append(t.Code, code{Kind: "block", Text: n.Code()})
			t.Skeleton = append(t.Skeleton, "code_block")
		case *markdown.InlineLink:
			t.Links = append(t.Links, link{Dest: n.Destination()})
			t.Skeleton = append(t.Skeleton, "link "+n.Destination())
		case *markdown.ReferenceLink:
			t.Links = append(t.Links, link{Dest: n.Destination()})
			t.Skeleton = append(t.Skeleton, "link "+n.Destination())
		case *markdown.Autolink:
			t.Links = append(t.Links, link{Dest: n.Destination()})
			t.Skeleton = append(t.Skeleton, "link "+n.Destination())
		case *markdown.InlineImage:
			t.Images = append(t.Images, image{Dest: n.Destination()})
			t.Skeleton = append(t.Skeleton, "image "+n.Destination())
		case *markdown.ReferenceImage:
			t.Images = append(t.Images, image{Dest: n.Destination()})
			t.Skeleton = append(t.Skeleton, "image "+n.Destination())
		case *markdown.BlockQuote:
			endLine()
			t.BlockQuotes = append(t.BlockQuotes, "block quote")
			t.Skeleton = append(t.Skeleton, "block_quote")
		case *markdown.List:
			endLine()
			t.Lists = append(t.Lists, "list")
			t.Skeleton = append(t.Skeleton, "list")
		case *markdown.ListItem:
			endLine()
			t.Skeleton = append(t.Skeleton, "item")
		default:
			t.Skeleton = append(t.Skeleton, fmt.Sprintf("%T", n))
		}
		return true
	})
	flush()
	endLine()
	return t
}

// mentionWords splits text into words the way the server does before it checks them for
// mentions (on every rune that is not a letter, a number or one of `:.-_@`), trims `:.-_`
// on the left, and returns each word, or part of it cut at `.-:`, that starts with `@`
// (without trailing `.-:_`).
func mentionWords(text string) []string {
	var found []string
	words := strings.FieldsFunc(text, func(c rune) bool {
		return !(c == ':' || c == '.' || c == '-' || c == '_' || c == '@' || unicode.IsLetter(c) || unicode.IsNumber(c))
	})
	for _, w := range words {
		if w[0] == ':' && w[len(w)-1] == ':' {
			continue
		}
		w = strings.TrimLeft(w, ":.-_")
		seen := map[string]bool{}
		for _, piece := range append([]string{w}, strings.FieldsFunc(w, func(c rune) bool {
			return c == '.' || c == '-' || c == ':'
		})...) {
			cut := strings.TrimRight(piece, ".-:_")
			if len(cut) > 1 && cut[0] == '@' && !seen[cut] {
				seen[cut] = true
				found = append(found, cut)
			}
		}
	}
	return found
}
