import { Errors } from '@shoal/core';

/**
 * Parse RFC 4180 CSV text (quoted fields, doubled quotes, commas and newlines inside quotes, CRLF or LF) into a
 * header and rows of string fields. `where` names the source in errors. Returns fresh arrays owned by the caller.
 * A row whose field count differs from the header raises ERR_DATA naming the line.
 */
export function parseCsv(text: string, where: string): { header: string[]; rows: string[][] } {
  const rows: string[][] = [];
  let field = '';
  let row: string[] = [];
  let inQuotes = false;
  let line = 1;
  let i = 0;
  const n = text.length;
  if (n > 0 && text.charCodeAt(0) === 0xfeff) i = 1; // BOM
  while (i < n) {
    const c = text.charCodeAt(i);
    if (inQuotes) {
      if (c === 34 /* " */) {
        if (i + 1 < n && text.charCodeAt(i + 1) === 34) { field += '"'; i += 2; continue; }
        inQuotes = false; i += 1; continue;
      }
      if (c === 10) line += 1;
      // Take a run of plain characters at once.
      let j = i + 1;
      while (j < n) { const d = text.charCodeAt(j); if (d === 34 || d === 10) break; j += 1; }
      field += text.slice(i, j); i = j; continue;
    }
    if (c === 34) {
      if (field.length !== 0) throw Errors.data(where, `line ${line}: quote inside an unquoted field`);
      inQuotes = true; i += 1; continue;
    }
    if (c === 44 /* , */) { row.push(field); field = ''; i += 1; continue; }
    if (c === 13 /* \r */) { i += 1; continue; }
    if (c === 10) {
      row.push(field); field = '';
      if (!(row.length === 1 && row[0] === '')) rows.push(row);
      row = []; line += 1; i += 1; continue;
    }
    let j = i + 1;
    while (j < n) { const d = text.charCodeAt(j); if (d === 44 || d === 10 || d === 13 || d === 34) break; j += 1; }
    field += text.slice(i, j); i = j;
  }
  if (inQuotes) throw Errors.data(where, `unterminated quoted field at end of input (line ${line})`);
  if (field.length > 0 || row.length > 0) { row.push(field); rows.push(row); }
  const header = rows.shift();
  if (header === undefined) throw Errors.data(where, 'empty CSV: no header row');
  for (let r = 0; r < rows.length; r++) {
    if (rows[r]!.length !== header.length) {
      throw Errors.data(where, `row ${r + 2} has ${rows[r]!.length} fields, the header has ${header.length}`);
    }
  }
  return { header, rows };
}
