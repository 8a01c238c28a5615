// Shell commands as a reader sees them in Markdown: every fenced `sh` / `bash` / `shell` / `zsh` / `console`
// block of a file, split into commands the way a shell would (newlines, `&&`, `||`, `;`; a backslash-newline
// continues a line, a quoted string may span lines, `#` starts a comment), with the command substitutions
// (`$(…)`) inside them listed as commands of their own. Used by readme-commands.test.mjs so that no command can
// be shown without a test behind it.

const SHELL_LANGS = new Set(['sh', 'bash', 'shell', 'zsh', 'console'])

/**
 * @typedef {object} ShellCommand
 * @property {string} file  the Markdown file, as given
 * @property {number} line  1-based line of the command's first character
 * @property {number} block  index of its fenced block in the file
 * @property {string} text  the command as written (comments removed, continuations kept)
 * @property {string} normalized  whitespace collapsed: what rules match against
 * @property {string | null} inside  for a command substitution, the normalized command it appears in
 */

/** The fenced shell blocks of a Markdown text: `[{lang, line, body}]` (line = the first line of the body). */
export function shellBlocks(markdown) {
  const blocks = []
  const lines = markdown.split('\n')
  for (let i = 0; i < lines.length; i++) {
    const open = /^(\s*)(`{3,}|~{3,})\s*([\w+-]*)/.exec(lines[i])
    if (!open) continue
    const [, , fence, lang] = open
    const body = []
    let j = i + 1
    for (; j < lines.length && !lines[j].trimStart().startsWith(fence); j++) body.push(lines[j])
    if (SHELL_LANGS.has(lang.toLowerCase())) {
      // `console` blocks show a prompt: only `$ ` lines are commands.
      const text = lang.toLowerCase() === 'console' ? body.map((l) => (l.startsWith('$ ') ? l.slice(2) : '')).join('\n') : body.join('\n')
      blocks.push({lang: lang.toLowerCase(), line: i + 2, body: text})
    }
    i = j
  }
  return blocks
}

/**
 * Split one block's text into commands. Returns `[{text, line, substitutions: [{text, line}]}]` (line relative to
 * the block's first line, 0-based). Throws on an unterminated quote or substitution: such a block could not be
 * pasted into a shell either.
 */
export function splitCommands(text) {
  const commands = []
  let current = ''
  let startLine = null
  let line = 0
  let quote = null // "'" | '"' | null
  const subs = [] // stack of open $( … ): {start, line}
  let found = [] // substitutions of the current command
  const flush = () => {
    const t = current.trim()
    if (t) commands.push({text: t, line: startLine, substitutions: found})
    current = ''
    startLine = null
    found = []
  }
  for (let i = 0; i < text.length; i++) {
    const ch = text[i]
    const next = text[i + 1]
    if (ch === '\n') line += 1
    if (quote === "'") {
      current += ch
      if (ch === "'") quote = null
      continue
    }
    if (ch === '\\' && next !== undefined) {
      if (next === '\n') {
        // A continuation: the command goes on on the next line.
        current += ' '
        line += 1
        i += 1
        continue
      }
      current += ch + next
      i += 1
      continue
    }
    if (quote === '"') {
      if (ch === '"') quote = null
      else if (ch === '$' && next === '(') {
        subs.push({start: current.length + 2, line})
        current += '$('
        i += 1
        continue
      } else if (ch === ')' && subs.length) closeSub()
      current += ch
      continue
    }
    if (ch === '#' && (current === '' || /\s$/.test(current))) {
      // A comment, to the end of the line.
      while (i + 1 < text.length && text[i + 1] !== '\n') i += 1
      continue
    }
    if (startLine === null && !/\s/.test(ch)) startLine = line
    if (ch === "'" || ch === '"') {
      quote = ch
      current += ch
      continue
    }
    if (ch === '$' && next === '(') {
      subs.push({start: current.length + 2, line})
      current += '$('
      i += 1
      continue
    }
    if (ch === ')' && subs.length) {
      closeSub()
      current += ch
      continue
    }
    if (subs.length === 0) {
      if (ch === '\n' || ch === ';') {
        flush()
        continue
      }
      if ((ch === '&' && next === '&') || (ch === '|' && next === '|')) {
        flush()
        i += 1
        continue
      }
    }
    current += ch
  }
  if (quote || subs.length) throw new Error(`unterminated ${quote ? `${quote} quote` : '$( substitution'} in:\n${text}`)
  flush()
  return commands

  function closeSub() {
    const open = subs.pop()
    const inner = current.slice(open.start).trim()
    for (const c of splitCommands(inner)) found.push({text: c.text, line: open.line + c.line})
  }
}

/** Collapse whitespace, for matching. */
export const normalize = (text) => text.replace(/\s+/g, ' ').trim()

/**
 * Every shell command of the Markdown files, in file order, each substitution after the command it is in.
 * @param {{file: string, markdown: string}[]} files
 * @returns {ShellCommand[]}
 */
export function shellCommands(files) {
  const out = []
  for (const {file, markdown} of files) {
    shellBlocks(markdown).forEach((block, index) => {
      for (const c of splitCommands(block.body)) {
        const normalized = normalize(c.text)
        out.push({file, line: block.line + c.line, block: index, text: c.text, normalized, inside: null})
        for (const s of c.substitutions) {
          out.push({file, line: block.line + s.line, block: index, text: s.text, normalized: normalize(s.text), inside: normalized})
        }
      }
    })
  }
  return out
}
