/**
 * `-H` values as the CLIs take them: 'Name: value', or '@file' for that file's non-blank lines, as curl takes them,
 * so a credential need not be on the command line, where every local user can read it in ps. Each comes with where it
 * came from, for an error that must name a header without showing it (it is often a credential).
 */
export interface HeaderArg {
  line: string;
  /** `#k` for the k-th -H, `#k (line i of its file)` for a file's line. */
  where: string;
}

/** `read(file)`: the file's text, or undefined when it could not be read (the caller has reported why). */
export function headerArgs(values: readonly string[], read: (file: string) => string | undefined): HeaderArg[] {
  return values.flatMap((v, k) => {
    if (!v.startsWith('@')) return [{ line: v, where: `#${k + 1}` }];
    const text = read(v.slice(1));
    if (text === undefined) return [];
    return text.split(/\r?\n/).flatMap((line, i) => (line.trim() ? [{ line, where: `#${k + 1} (line ${i + 1} of its file)` }] : []));
  });
}
