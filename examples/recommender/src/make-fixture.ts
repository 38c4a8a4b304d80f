/**
 * Writes the second shipped data set, a ratings log in another shape than Online Retail (MovieLens-1M style):
 *
 *   ratings.dat.gz   user::title::rating::unix_seconds      no header, "::"-separated, explicit 1-5 ratings
 *   titles.dat       title::name (year)::genre|genre        the item names, a side file
 *
 *   node examples/recommender/dist/make-fixture.js [dir]   (default examples/recommender/fixtures/synthetic-ratings)
 *   npm run demo -- --config examples/recommender/configs/synthetic-ratings.json
 *
 * How it is drawn (seeded, so the files are reproducible): titles have genres and a Zipf-like popularity, some
 * form series (part 2 follows part 1), new titles appear through the period. Users have a few favourite genres
 * and a lognormal activity level; they come back in sessions (Poisson arrivals over 200 days, minutes between
 * ratings inside a session). Inside a session a user mostly stays in one genre, follows a series with its next
 * part, and sometimes re-rates a title seen before (repeat behaviour). Ratings are higher for favourite genres,
 * so the config's threshold (rating >= 4) keeps mostly on-taste interactions.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import { Rng } from '@shoal/core';

export interface RatingsFixtureOptions { users: number; titles: number; genres: number; days: number; seed: number }
export const RATINGS_FIXTURE: RatingsFixtureOptions = { users: 3000, titles: 1400, genres: 16, days: 200, seed: 11 };

const GENRES = ['Action', 'Adventure', 'Animation', "Children's", 'Comedy', 'Crime', 'Documentary', 'Drama', 'Fantasy', 'Film-Noir', 'Horror', 'Musical', 'Mystery', 'Romance', 'Sci-Fi', 'Thriller', 'War', 'Western'];
const WORDS = ['Silent', 'River', 'Night', 'Golden', 'Storm', 'Last', 'Summer', 'City', 'Shadow', 'Heart', 'Star', 'Voyage', 'Lost', 'Garden', 'Iron', 'Winter', 'Secret', 'Road', 'Dream', 'Wild', 'Glass', 'Empire', 'Blue', 'Fire', 'Ocean', 'Kingdom'];

/** The two files' text. */
export function makeRatingsFixture(o: RatingsFixtureOptions): { ratings: string; titles: string } {
  const rng = new Rng(o.seed);
  const normal = (): number => Math.sqrt(-2 * Math.log(Math.max(rng.next(), 1e-12))) * Math.cos(2 * Math.PI * rng.next());
  const t0 = 1_700_000_000, span = o.days * 86_400;
  // Titles: a main genre (+ maybe a second), Zipf popularity, release time, series links.
  const genre = new Int32Array(o.titles), genre2 = new Int32Array(o.titles).fill(-1), release = new Float64Array(o.titles);
  const pop = new Float64Array(o.titles), next = new Int32Array(o.titles).fill(-1);
  const names: string[] = [];
  for (let i = 0; i < o.titles; i++) {
    const prev = i > 0 && next[i - 1] === -1 && rng.next() < 0.12 ? i - 1 : -1; // i continues i-1's series
    if (prev >= 0) {
      next[prev] = i;
      genre[i] = genre[prev]!; genre2[i] = genre2[prev]!;
      release[i] = Math.min(span * 0.95, release[prev]! + rng.next() * span * 0.3);
      const m = / (?:(\d) )?\((\d{4})\)$/.exec(names[prev]!)!;
      const base = names[prev]!.slice(0, m.index);
      names.push(`${base} ${m[1] ? Number(m[1]) + 1 : 2} (${Number(m[2]) + 1 + rng.int(3)})`);
    } else {
      genre[i] = rng.int(o.genres);
      if (rng.next() < 0.4) genre2[i] = (genre[i]! + 1 + rng.int(o.genres - 1)) % o.genres;
      release[i] = rng.next() < 0.7 ? 0 : rng.next() * span * 0.9;
      const w = (): string => WORDS[rng.int(WORDS.length)]!;
      const title = rng.next() < 0.25 ? `${w()} ${w()}: The ${w()}` : `The ${w()} ${w()}`;
      names.push(`${title} (${1960 + rng.int(40)})`);
    }
    pop[i] = 1 / Math.pow(1 + rng.int(o.titles), 0.9);
  }
  const byGenre: number[][] = Array.from({ length: o.genres }, () => []);
  for (let i = 0; i < o.titles; i++) { byGenre[genre[i]!]!.push(i); if (genre2[i]! >= 0) byGenre[genre2[i]!]!.push(i); }
  /** A title of genre g released by time t, by popularity (rejection sampling on the Zipf weights). */
  const draw = (g: number, t: number): number => {
    const l = byGenre[g]!;
    for (let k = 0; k < 200; k++) {
      const i = l[rng.int(l.length)]!;
      if (release[i]! <= t && rng.next() < pop[i]! / 0.35) return i;
    }
    return l[rng.int(l.length)]!;
  };
  const lines: string[] = [];
  for (let u = 1; u <= o.users; u++) {
    const favs = [rng.int(o.genres), rng.int(o.genres), rng.int(o.genres)];
    const likes = (i: number): number => (favs.includes(genre[i]!) ? 1 : 0) + (genre2[i]! >= 0 && favs.includes(genre2[i]!) ? 0.5 : 0);
    const sessions = Math.max(1, Math.round(Math.exp(1.6 + 0.8 * normal())));
    const start = rng.next() < 0.8 ? rng.next() * span * 0.5 : rng.next() * span;
    const seen: number[] = [];
    let t = start;
    for (let s = 0; s < sessions && t < span; s++) {
      const g = rng.next() < 0.8 ? favs[rng.int(rng.next() < 0.6 ? 1 : 3)]! : rng.int(o.genres);
      const len = 2 + Math.floor(-Math.log(Math.max(rng.next(), 1e-9)) * 4);
      let prev = -1;
      let ts = t;
      for (let k = 0; k < len; k++) {
        let item: number;
        if (prev >= 0 && next[prev]! >= 0 && release[next[prev]!]! <= ts && rng.next() < 0.6) item = next[prev]!;
        else if (seen.length > 0 && rng.next() < 0.15) item = seen[rng.int(seen.length)]!;
        else item = draw(rng.next() < 0.85 ? g : rng.int(o.genres), ts);
        const rating = Math.max(1, Math.min(5, Math.round(2.8 + 1.3 * likes(item) + 0.9 * normal())));
        lines.push(`${u}::${item + 1}::${rating}::${t0 + Math.floor(ts)}`);
        seen.push(item);
        prev = item;
        ts += 60 + rng.int(20 * 60);
      }
      t = ts + 86_400 * (-Math.log(Math.max(rng.next(), 1e-9)) * (o.days / (sessions + 1)));
    }
  }
  const titles = names.map((n, i) => `${i + 1}::${n}::${[genre[i]!, genre2[i]!].filter((g) => g >= 0).map((g) => GENRES[g % GENRES.length]).join('|')}`);
  return { ratings: lines.join('\n') + '\n', titles: titles.join('\n') + '\n' };
}

const isMain = process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url);
if (isMain) {
  const dir = resolve(process.argv[2] ?? join(dirname(fileURLToPath(import.meta.url)), '..', 'fixtures', 'synthetic-ratings'));
  mkdirSync(dir, { recursive: true });
  const f = makeRatingsFixture(RATINGS_FIXTURE);
  writeFileSync(join(dir, 'ratings.dat.gz'), gzipSync(f.ratings, { level: 9 }));
  writeFileSync(join(dir, 'titles.dat'), f.titles);
  console.log(`wrote ${join(dir, 'ratings.dat.gz')} (${f.ratings.split('\n').length - 1} ratings) and titles.dat`);
}
