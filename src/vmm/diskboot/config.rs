//! Boot configurations as text: Boot Loader Specification entries, GRUB's
//! generated grub.cfg, extlinux/syslinux. Pure functions; the caller finds the
//! files and the kernels they name.

/// One bootable entry as a configuration declares it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Entry {
    /// The entry's title (for the log).
    pub title: String,
    /// The kernel's path, as written (may carry a `(hdX,gptY)` or `($root)` prefix).
    pub linux: String,
    /// Initrd paths, in order.
    pub initrd: Vec<String>,
    /// The kernel command line.
    pub options: String,
    /// GRUB: `search --fs-uuid --set=root <uuid>` in the entry (or before it).
    pub search_uuid: Option<String>,
    /// GRUB: `set root='hd0,gpt2'` → partition 2.
    pub root_partition: Option<u32>,
}

/// A limit on the entries and nesting read from one file.
const MAX_ENTRIES: usize = 256;
const MAX_DEPTH: usize = 16;

/// Splits a shell-like line into words, honouring quotes and `\` escapes.
pub fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut has = false;
    let mut chars = line.chars();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some('"'), '\\') => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            (Some(_), c) => cur.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                has = true;
            }
            (None, '\\') => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                    has = true;
                }
            }
            (None, '#') if !has && cur.is_empty() => break,
            (None, ';') => {
                if has || !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
                has = false;
                out.push(";".into());
            }
            (None, c) if c.is_whitespace() => {
                if has || !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
                has = false;
            }
            (None, c) => {
                cur.push(c);
                has = true;
            }
        }
    }
    if has || !cur.is_empty() {
        out.push(cur);
    }
    out
}

// ------------------------------------------------------------------ BLS

/// Parses one Boot Loader Specification entry (`/loader/entries/*.conf`).
pub fn parse_bls(text: &str) -> Option<(Entry, String)> {
    let mut e = Entry::default();
    let mut version = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') {
            continue;
        }
        let (key, value) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let value = value.trim();
        match key {
            "title" => e.title = value.into(),
            "version" => version = value.into(),
            "linux" => e.linux = value.into(),
            "initrd" => e.initrd.extend(value.split_whitespace().map(String::from)),
            "options" => {
                if !e.options.is_empty() {
                    e.options.push(' ');
                }
                e.options.push_str(value);
            }
            _ => {}
        }
    }
    // `$kernelopts` (older Fedora) comes from grubenv, which is not read.
    e.options = e
        .options
        .split_whitespace()
        .filter(|w| !w.starts_with('$'))
        .collect::<Vec<_>>()
        .join(" ");
    (!e.linux.is_empty()).then_some((e, version))
}

/// Compares version strings as the BLS and `rpmvercmp` do, roughly: runs of
/// digits numerically, other runs as text.
pub fn version_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    fn parts(s: &str) -> Vec<(bool, String)> {
        let mut out: Vec<(bool, String)> = Vec::new();
        for c in s.chars() {
            let digit = c.is_ascii_digit();
            if !c.is_ascii_alphanumeric() {
                out.push((false, String::new()));
                continue;
            }
            match out.last_mut() {
                Some((d, run)) if *d == digit && !run.is_empty() => run.push(c),
                _ => out.push((digit, c.to_string())),
            }
        }
        out.retain(|(_, r)| !r.is_empty());
        out
    }
    let (pa, pb) = (parts(a), parts(b));
    for (x, y) in pa.iter().zip(pb.iter()) {
        let o = match (x.0, y.0) {
            (true, true) => {
                let (xs, ys) = (x.1.trim_start_matches('0'), y.1.trim_start_matches('0'));
                xs.len().cmp(&ys.len()).then_with(|| xs.cmp(ys))
            }
            (true, false) => std::cmp::Ordering::Greater,
            (false, true) => std::cmp::Ordering::Less,
            _ => x.1.cmp(&y.1),
        };
        if o.is_ne() {
            return o;
        }
    }
    pa.len().cmp(&pb.len())
}

// ------------------------------------------------------------------ GRUB

/// What a grub.cfg says: its menu and where it hands over.
#[derive(Clone, Debug, Default)]
pub struct Grub {
    /// `set default=…` (the last literal one).
    pub default: Option<String>,
    /// Top-level items.
    pub items: Vec<Item>,
    /// `configfile <path>` at the top level (Debian's ESP stub), with the
    /// `search --fs-uuid` that preceded it.
    pub configfile: Option<(String, Option<String>)>,
}

/// A menu item.
#[derive(Clone, Debug)]
pub enum Item {
    /// `menuentry 'title' … $menuentry_id_option 'id' { … }`.
    Entry {
        /// Title.
        title: String,
        /// Id (`--id` or `$menuentry_id_option`).
        id: Option<String>,
        /// What it boots.
        entry: Entry,
    },
    /// `submenu 'title' { … }`.
    Submenu {
        /// Title.
        title: String,
        /// Id.
        id: Option<String>,
        /// Its items.
        items: Vec<Item>,
    },
}

fn title_and_id(w: &[String]) -> (String, Option<String>) {
    let title = w.get(1).cloned().unwrap_or_default();
    let mut id = None;
    for (i, x) in w.iter().enumerate() {
        if (x == "$menuentry_id_option" || x == "--id") && i + 1 < w.len() {
            id = Some(w[i + 1].clone());
        } else if let Some(v) = x.strip_prefix("--id=") {
            id = Some(v.to_string());
        }
    }
    (title, id)
}

fn search_uuid(w: &[String]) -> Option<String> {
    let cmd = w.first()?.as_str();
    let by_uuid = cmd == "search.fs_uuid"
        || (cmd == "search" && w.iter().any(|x| x == "--fs-uuid" || x == "-u"));
    if !by_uuid {
        return None;
    }
    w.iter()
        .skip(1)
        .filter(|x| !x.starts_with('-') && *x != ";")
        .find(|x| x.len() >= 8)
        .cloned()
}

fn root_partition(value: &str) -> Option<u32> {
    // 'hd0,gpt2', 'hd0,msdos1', '(hd0,2)'
    let v = value.trim_matches(|c| c == '(' || c == ')');
    let part = v.split(',').nth(1)?;
    let digits: String = part.chars().filter(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}

/// Parses a grub.cfg as `grub-mkconfig` writes it.
pub fn parse_grub(text: &str) -> Grub {
    let lines: Vec<Vec<String>> = text
        .lines()
        .map(words)
        .flat_map(|ws| {
            // One command per `;`-separated piece.
            let mut out = Vec::new();
            let mut cur = Vec::new();
            for w in ws {
                if w == ";" {
                    out.push(std::mem::take(&mut cur));
                } else {
                    cur.push(w);
                }
            }
            out.push(cur);
            out
        })
        .filter(|c| !c.is_empty())
        .collect();
    let mut g = Grub::default();
    let mut pos = 0;
    let mut search = None;
    g.items = block(&lines, &mut pos, 0, &mut g, &mut search);
    g
}

fn block(
    lines: &[Vec<String>],
    pos: &mut usize,
    depth: usize,
    g: &mut Grub,
    search: &mut Option<String>,
) -> Vec<Item> {
    let mut items = Vec::new();
    while *pos < lines.len() {
        let w = &lines[*pos];
        *pos += 1;
        let cmd = w[0].as_str();
        match cmd {
            "}" => return items,
            "menuentry" | "submenu" if depth < MAX_DEPTH && items.len() < MAX_ENTRIES => {
                let (title, id) = title_and_id(w);
                if cmd == "submenu" {
                    let sub = block(lines, pos, depth + 1, g, search);
                    items.push(Item::Submenu {
                        title,
                        id,
                        items: sub,
                    });
                } else {
                    let entry = entry_body(lines, pos, search.clone());
                    items.push(Item::Entry {
                        title: title.clone(),
                        id,
                        entry: Entry { title, ..entry },
                    });
                }
            }
            "set" if depth == 0 => {
                if let Some(v) = w.get(1).and_then(|a| a.strip_prefix("default="))
                    && !v.contains('$')
                {
                    g.default = Some(v.to_string());
                }
            }
            _ if w.last().map(String::as_str) == Some("{") => {
                // `function name {` and other blocks: skipped whole.
                let mut open = 1usize;
                while *pos < lines.len() && open > 0 {
                    let l = &lines[*pos];
                    *pos += 1;
                    if l[0] == "}" {
                        open -= 1;
                    } else if l.last().map(String::as_str) == Some("{") {
                        open += 1;
                    }
                }
            }
            "configfile" if depth == 0 => {
                if let Some(p) = w.get(1) {
                    g.configfile = Some((p.clone(), search.clone()));
                }
            }
            _ => {
                if let Some(u) = search_uuid(w) {
                    *search = Some(u);
                }
            }
        }
    }
    items
}

fn entry_body(lines: &[Vec<String>], pos: &mut usize, search: Option<String>) -> Entry {
    let mut e = Entry {
        search_uuid: search,
        ..Entry::default()
    };
    let mut depth = 0usize;
    while *pos < lines.len() {
        let w = &lines[*pos];
        *pos += 1;
        let cmd = w[0].as_str();
        match cmd {
            "}" if depth == 0 => break,
            "}" => depth -= 1,
            "linux" | "linux16" | "linuxefi" | "kernel" if e.linux.is_empty() => {
                if let Some(k) = w.get(1) {
                    e.linux = k.clone();
                    e.options = w[2..]
                        .iter()
                        .filter(|x| !x.starts_with('$'))
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(" ");
                }
            }
            "initrd" | "initrd16" | "initrdefi" if e.initrd.is_empty() => {
                e.initrd = w[1..].to_vec();
            }
            "set" => {
                if let Some(v) = w.get(1).and_then(|a| a.strip_prefix("root=")) {
                    e.root_partition = root_partition(v);
                }
            }
            _ => {
                if w.last().map(String::as_str) == Some("{") {
                    depth += 1;
                }
                if let Some(u) = search_uuid(w) {
                    e.search_uuid = Some(u);
                }
            }
        }
    }
    e
}

impl Grub {
    /// The default entry: `set default=` as an index (`1`, `1>2` into
    /// submenus), an id or a title; the first entry otherwise.
    pub fn default_entry(&self) -> Option<&Entry> {
        let wanted = self.default.as_deref().unwrap_or("0");
        let mut items = &self.items;
        let mut found = None;
        for part in wanted.split('>') {
            let item = match part.parse::<usize>() {
                Ok(i) => items.get(i),
                Err(_) => find_named(items, part),
            };
            match item {
                Some(Item::Entry { entry, .. }) => {
                    found = Some(entry);
                    break;
                }
                Some(Item::Submenu { items: sub, .. }) => items = sub,
                None => break,
            }
        }
        found.or_else(|| first_entry(&self.items))
    }
}

fn find_named<'a>(items: &'a [Item], name: &str) -> Option<&'a Item> {
    items.iter().find(|i| match i {
        Item::Entry { title, id, .. } | Item::Submenu { title, id, .. } => {
            title == name || id.as_deref() == Some(name)
        }
    })
}

fn first_entry(items: &[Item]) -> Option<&Entry> {
    items.iter().find_map(|i| match i {
        Item::Entry { entry, .. } => Some(entry),
        Item::Submenu { items, .. } => first_entry(items),
    })
}

/// Removes a GRUB device prefix: `(hd0,gpt2)/boot/x` → `/boot/x`.
pub fn strip_device(path: &str) -> &str {
    if path.starts_with('(') {
        path.find(')').map_or(path, |i| &path[i + 1..])
    } else {
        path
    }
}

// -------------------------------------------------------- extlinux/syslinux

/// Parses an extlinux.conf / syslinux.cfg: the `DEFAULT` label's entry (or
/// the first label).
pub fn parse_extlinux(text: &str) -> Option<Entry> {
    let mut default = None;
    let mut entries: Vec<(String, Entry)> = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (key, value) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let value = value.trim();
        match key.to_ascii_lowercase().as_str() {
            "default" => default = Some(value.to_string()),
            "label" if entries.len() < MAX_ENTRIES => entries.push((
                value.to_string(),
                Entry {
                    title: value.to_string(),
                    ..Entry::default()
                },
            )),
            "kernel" | "linux" => {
                if let Some((_, e)) = entries.last_mut() {
                    e.linux = value.to_string();
                }
            }
            "initrd" => {
                if let Some((_, e)) = entries.last_mut() {
                    e.initrd
                        .extend(value.split(',').map(|s| s.trim().to_string()));
                }
            }
            "append" => {
                if let Some((_, e)) = entries.last_mut() {
                    let mut opts = Vec::new();
                    for w in value.split_whitespace() {
                        match w.strip_prefix("initrd=") {
                            Some(i) => e.initrd.extend(i.split(',').map(String::from)),
                            None => opts.push(w),
                        }
                    }
                    e.options = opts.join(" ");
                }
            }
            _ => {}
        }
    }
    let pick = default
        .as_deref()
        .and_then(|d| entries.iter().find(|(l, _)| l == d))
        .or_else(|| entries.first());
    pick.map(|(_, e)| e.clone()).filter(|e| !e.linux.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape of Debian 12 genericcloud's /boot/grub/grub.cfg.
    const DEBIAN: &str = r#"
if [ -s $prefix/grubenv ]; then
  set have_grubenv=true
  load_env
fi
if [ "${next_entry}" ] ; then
   set default="${next_entry}"
   set next_entry=
   save_env next_entry
   set boot_once=true
else
   set default="0"
fi
function load_video {
  if [ x$feature_all_video_module = xy ]; then
    insmod all_video
  fi
}
insmod part_gpt
insmod ext2
search --no-floppy --fs-uuid --set=root 11111111-2222-3333-4444-555555555555
### BEGIN /etc/grub.d/10_linux ###
menuentry 'Debian GNU/Linux' --class debian --class gnu-linux --class gnu --class os $menuentry_id_option 'gnulinux-simple-1111' {
	load_video
	insmod gzio
	if [ x$grub_platform = xxen ]; then insmod xzio; insmod lzopio; fi
	insmod part_gpt
	insmod ext2
	set root='hd0,gpt1'
	if [ x$feature_platform_search_hint = xy ]; then
	  search --no-floppy --fs-uuid --set=root --hint-bios=hd0,gpt1 11111111-2222-3333-4444-555555555555
	else
	  search --no-floppy --fs-uuid --set=root 11111111-2222-3333-4444-555555555555
	fi
	echo	'Loading Linux 6.1.0-13-cloud-amd64 ...'
	linux	/boot/vmlinuz-6.1.0-13-cloud-amd64 root=PARTUUID=aaaa ro console=tty0 console=ttyS0,115200 earlyprintk=ttyS0,115200 consoleblank=0 $vt_handoff
	echo	'Loading initial ramdisk ...'
	initrd	/boot/initrd.img-6.1.0-13-cloud-amd64
}
submenu 'Advanced options for Debian GNU/Linux' $menuentry_id_option 'gnulinux-advanced-1111' {
	menuentry 'Debian GNU/Linux, with Linux 6.1.0-13-cloud-amd64' --class debian $menuentry_id_option 'gnulinux-6.1.0-13-cloud-amd64-advanced-1111' {
		linux	/boot/vmlinuz-6.1.0-13-cloud-amd64 root=PARTUUID=aaaa ro single
		initrd	/boot/initrd.img-6.1.0-13-cloud-amd64
	}
	menuentry 'Debian GNU/Linux, with Linux 6.1.0-12-cloud-amd64' --class debian $menuentry_id_option 'gnulinux-6.1.0-12-cloud-amd64-advanced-1111' {
		linux	/boot/vmlinuz-6.1.0-12-cloud-amd64 root=PARTUUID=aaaa ro
		initrd	/boot/initrd.img-6.1.0-12-cloud-amd64
	}
}
"#;

    #[test]
    fn grub_default_entry_and_submenus() {
        let g = parse_grub(DEBIAN);
        assert_eq!(g.default.as_deref(), Some("0"));
        let e = g.default_entry().expect("entry");
        assert_eq!(e.linux, "/boot/vmlinuz-6.1.0-13-cloud-amd64");
        assert_eq!(e.initrd, vec!["/boot/initrd.img-6.1.0-13-cloud-amd64"]);
        assert_eq!(
            e.options,
            "root=PARTUUID=aaaa ro console=tty0 console=ttyS0,115200 earlyprintk=ttyS0,115200 consoleblank=0"
        );
        assert_eq!(
            e.search_uuid.as_deref(),
            Some("11111111-2222-3333-4444-555555555555")
        );
        assert_eq!(e.root_partition, Some(1));

        for default in [
            "1>1",
            "gnulinux-advanced-1111>gnulinux-6.1.0-12-cloud-amd64-advanced-1111",
            "Advanced options for Debian GNU/Linux>Debian GNU/Linux, with Linux 6.1.0-12-cloud-amd64",
        ] {
            let text = DEBIAN.replace("set default=\"0\"", &format!("set default=\"{default}\""));
            let g = parse_grub(&text);
            let e = g.default_entry().expect("entry");
            assert_eq!(e.linux, "/boot/vmlinuz-6.1.0-12-cloud-amd64", "{default}");
        }
        // A default that names nothing: the first entry.
        let g = parse_grub(&DEBIAN.replace("set default=\"0\"", "set default=\"7\""));
        assert_eq!(
            g.default_entry().expect("entry").linux,
            "/boot/vmlinuz-6.1.0-13-cloud-amd64"
        );
    }

    #[test]
    fn grub_esp_stub_hands_over() {
        let g = parse_grub(
            "search.fs_uuid 11111111-2222-3333-4444-555555555555 root \nset prefix=($root)'/boot/grub'\nconfigfile $prefix/grub.cfg\n",
        );
        let (path, uuid) = g.configfile.expect("configfile");
        assert_eq!(path, "$prefix/grub.cfg");
        assert_eq!(
            uuid.as_deref(),
            Some("11111111-2222-3333-4444-555555555555")
        );
    }

    #[test]
    fn bls_entries_and_versions() {
        let (e, v) = parse_bls(
            "title Fedora Linux (6.5.6-300.fc39.x86_64)\nversion 6.5.6-300.fc39.x86_64\nlinux /vmlinuz-6.5.6-300.fc39.x86_64\ninitrd /initramfs-6.5.6-300.fc39.x86_64.img\noptions root=UUID=abc ro $kernelopts console=ttyS0\n",
        )
        .expect("entry");
        assert_eq!(e.linux, "/vmlinuz-6.5.6-300.fc39.x86_64");
        assert_eq!(e.options, "root=UUID=abc ro console=ttyS0");
        assert_eq!(v, "6.5.6-300.fc39.x86_64");
        use std::cmp::Ordering::*;
        assert_eq!(version_cmp("6.10.1", "6.9.12"), Greater);
        assert_eq!(version_cmp("6.5.6-300", "6.5.6-300"), Equal);
        assert_eq!(version_cmp("5.14.0-70", "5.14.0-162"), Less);
        assert!(parse_bls("title nothing\n").is_none());
    }

    #[test]
    fn extlinux_default_label() {
        let e = parse_extlinux(
            "DEFAULT linux\nTIMEOUT 0\nLABEL rescue\n  KERNEL /boot/vmlinuz-old\nLABEL linux\n  KERNEL /boot/vmlinuz\n  APPEND root=/dev/vda1 ro initrd=/boot/initrd.img console=ttyS0\n",
        )
        .expect("entry");
        assert_eq!(e.linux, "/boot/vmlinuz");
        assert_eq!(e.initrd, vec!["/boot/initrd.img"]);
        assert_eq!(e.options, "root=/dev/vda1 ro console=ttyS0");
    }

    #[test]
    fn words_quote_and_split() {
        assert_eq!(
            words("linux\t'/a b' \"c\\\"d\" e;f # g"),
            vec!["linux", "/a b", "c\"d", "e", ";", "f"]
        );
        assert_eq!(strip_device("(hd0,gpt2)/boot/x"), "/boot/x");
    }
}
