// A small terminal for the serial console: enough of a VT100 for a shell line by line.
// Output is appended as text (never parsed as HTML); CSI/OSC escape sequences are
// dropped, \r returns to the line start, \b moves back; keys become bytes.
import { h } from './dom.js';

const MAX_LINES = 2000;

export class Terminal {
  constructor(label) {
    this.el = h('pre', { class: 'term', tabindex: '0', role: 'log', 'aria-live': 'polite', 'aria-label': label });
    this.lines = [''];
    this.col = 0;
    this.esc = '';
    this.decoder = new TextDecoder();
    this.onData = () => {};
    this.el.addEventListener('keydown', (e) => this.key(e));
    this.el.addEventListener('paste', (e) => { e.preventDefault(); this.onData(e.clipboardData.getData('text').replace(/\n/g, '\r')); });
    this.pending = false;
  }

  key(e) {
    const map = { Enter: '\r', Backspace: '\x7f', Tab: '\t', Escape: '\x1b', ArrowUp: '\x1b[A', ArrowDown: '\x1b[B', ArrowRight: '\x1b[C', ArrowLeft: '\x1b[D', Home: '\x1b[H', End: '\x1b[F', Delete: '\x1b[3~' };
    let s = map[e.key];
    if (!s && e.ctrlKey && e.key.length === 1) {
      const c = e.key.toUpperCase().charCodeAt(0);
      if (c >= 64 && c < 96) s = String.fromCharCode(c - 64);
    }
    if (!s && e.key.length === 1 && !e.ctrlKey && !e.metaKey) s = e.key;
    if (s) { e.preventDefault(); this.onData(s); }
  }

  write(bytes) {
    const text = typeof bytes === 'string' ? bytes : this.decoder.decode(bytes, { stream: true });
    for (const ch of text) this.put(ch);
    if (this.lines.length > MAX_LINES) this.lines.splice(0, this.lines.length - MAX_LINES);
    if (!this.pending) { this.pending = true; requestAnimationFrame(() => this.paint()); }
  }

  put(ch) {
    if (this.esc) {
      this.esc += ch;
      const e = this.esc;
      if (e.length === 2 && e[1] !== '[' && e[1] !== ']') this.esc = '';
      else if (e[1] === '[' && e.length > 2 && ch >= '@' && ch <= '~') { this.csi(e); this.esc = ''; }
      else if (e[1] === ']' && (ch === '\x07' || e.endsWith('\x1b\\'))) this.esc = '';
      else if (e.length > 64) this.esc = '';
      return;
    }
    const line = this.lines.length - 1;
    switch (ch) {
      case '\x1b': this.esc = ch; return;
      case '\r': this.col = 0; return;
      case '\n': this.lines.push(''); this.col = 0; return;
      case '\b': this.col = Math.max(0, this.col - 1); return;
      case '\x07': return;
      default: {
        if (ch < ' ' && ch !== '\t') return;
        const l = this.lines[line];
        this.lines[line] = l.slice(0, this.col).padEnd(this.col, ' ') + ch + l.slice(this.col + 1);
        this.col++;
      }
    }
  }

  csi(seq) {
    const final = seq[seq.length - 1];
    const n = parseInt(seq.slice(2), 10) || 0;
    const line = this.lines.length - 1;
    if (final === 'K') {
      const l = this.lines[line];
      this.lines[line] = n === 0 ? l.slice(0, this.col) : n === 1 ? ' '.repeat(this.col) + l.slice(this.col) : '';
    } else if (final === 'C') this.col += n || 1;
    else if (final === 'D') this.col = Math.max(0, this.col - (n || 1));
    else if (final === 'J' && n === 2) { this.lines = ['']; this.col = 0; }
  }

  paint() {
    this.pending = false;
    const stick = this.el.scrollTop + this.el.clientHeight >= this.el.scrollHeight - 4;
    this.el.textContent = this.lines.join('\n');
    if (stick) this.el.scrollTop = this.el.scrollHeight;
  }

  text() { return this.lines.join('\n'); }
}
