// SPDX-License-Identifier: MIT OR Apache-2.0
/*
 * walk: the image conformance test's tree walker (scripts/image-test.sh). One static program for
 * the host and both guests, so every side of a comparison is read by the same code.
 *
 *   walk ROOT                       print ROOT's manifest on stdout, one line per path, sorted
 *   walk --compare EXPECTED ROOT    walk ROOT and compare with the manifest EXPECTED; print each
 *                                   difference (path, field, expected, got); exit 1 if any
 *   [--ignore FIELD[:TYPES][,...]]  leave these fields out of the comparison, for every path or
 *                                   only for paths of these types (e.g. mtime:l, symlinks)
 *
 * Manifest line (tab-separated): path type mode uid gid size nlink mtime rdev target xattrs sha256
 *   path    relative to ROOT ("." for ROOT); bytes <= 0x20, 0x7f and '\' written as \xHH
 *   type    f d l c b p s
 *   mode    permission bits incl. setuid/setgid/sticky, 4 octal digits
 *   size    bytes ("-" for directories: their size is the file system's business)
 *   nlink   link count ("-" for directories: writers and overlayfs count them differently)
 *   rdev    major:minor for c and b, else "-"
 *   target  symlink target (escaped like path), else "-"
 *   xattrs  name=hexvalue,... sorted by name, "-" when none
 *   sha256  of a regular file's content, else "-"
 * Exit status: 0 equal (or manifest printed), 1 differences, 2 error (message on stderr).
 * Bounded: at most MAX_ENTRIES paths and MAX_XATTR bytes of attribute names/values per path.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#define MAX_ENTRIES 2000000
#define MAX_XATTR 65536
#define NFIELDS 12
static const char *FIELD[NFIELDS] = {"path", "type", "mode", "uid", "gid", "size",
                                     "nlink", "mtime", "rdev", "target", "xattrs", "sha256"};

static void die(const char *what, const char *path)
{
	fprintf(stderr, "walk: %s %s: %s\n", what, path, strerror(errno));
	exit(2);
}

static void *xrealloc(void *p, size_t n)
{
	p = realloc(p, n);
	if (!p) {
		fprintf(stderr, "walk: out of memory\n");
		exit(2);
	}
	return p;
}

/* ---- a growable string ---- */
struct buf { char *s; size_t len, cap; };

static void put(struct buf *b, const void *p, size_t n)
{
	if (b->len + n + 1 > b->cap) {
		b->cap = (b->len + n + 1) * 2;
		b->s = xrealloc(b->s, b->cap);
	}
	memcpy(b->s + b->len, p, n);
	b->len += n;
	b->s[b->len] = 0;
}
static void puts_(struct buf *b, const char *s) { put(b, s, strlen(s)); }
static void putf(struct buf *b, const char *fmt, unsigned long long v)
{
	char t[32];
	put(b, t, (size_t)snprintf(t, sizeof t, fmt, v));
}
static void put_escaped(struct buf *b, const unsigned char *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (p[i] <= 0x20 || p[i] == 0x7f || p[i] == '\\') {
			char t[5];
			snprintf(t, sizeof t, "\\x%02x", p[i]);
			put(b, t, 4);
		} else {
			put(b, &p[i], 1);
		}
	}
}
static void put_hex(struct buf *b, const unsigned char *p, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	for (size_t i = 0; i < n; i++) {
		char t[2] = {hex[p[i] >> 4], hex[p[i] & 15]};
		put(b, t, 2);
	}
}

/* ---- SHA-256 (FIPS 180-4) ---- */
struct sha256 { uint32_t h[8]; uint64_t total; unsigned char blk[64]; size_t fill; };

static const uint32_t K256[64] = {
	0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
	0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
	0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
	0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
	0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
	0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
	0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
	0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};
#define ROR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void sha256_init(struct sha256 *c)
{
	static const uint32_t h0[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
				       0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
	memcpy(c->h, h0, sizeof h0);
	c->total = 0;
	c->fill = 0;
}

static void sha256_block(struct sha256 *c, const unsigned char *p)
{
	uint32_t w[64], v[8];
	for (int i = 0; i < 16; i++)
		w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
		       (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
	for (int i = 16; i < 64; i++) {
		uint32_t s0 = ROR(w[i - 15], 7) ^ ROR(w[i - 15], 18) ^ (w[i - 15] >> 3);
		uint32_t s1 = ROR(w[i - 2], 17) ^ ROR(w[i - 2], 19) ^ (w[i - 2] >> 10);
		w[i] = w[i - 16] + s0 + w[i - 7] + s1;
	}
	memcpy(v, c->h, sizeof v);
	for (int i = 0; i < 64; i++) {
		uint32_t S1 = ROR(v[4], 6) ^ ROR(v[4], 11) ^ ROR(v[4], 25);
		uint32_t ch = (v[4] & v[5]) ^ (~v[4] & v[6]);
		uint32_t t1 = v[7] + S1 + ch + K256[i] + w[i];
		uint32_t S0 = ROR(v[0], 2) ^ ROR(v[0], 13) ^ ROR(v[0], 22);
		uint32_t mj = (v[0] & v[1]) ^ (v[0] & v[2]) ^ (v[1] & v[2]);
		memmove(v + 1, v, 7 * sizeof v[0]);
		v[4] += t1;
		v[0] = t1 + S0 + mj;
	}
	for (int i = 0; i < 8; i++)
		c->h[i] += v[i];
}

static void sha256_update(struct sha256 *c, const unsigned char *p, size_t n)
{
	c->total += n;
	while (n) {
		size_t k = 64 - c->fill < n ? 64 - c->fill : n;
		memcpy(c->blk + c->fill, p, k);
		c->fill += k, p += k, n -= k;
		if (c->fill == 64) {
			sha256_block(c, c->blk);
			c->fill = 0;
		}
	}
}

static void sha256_final(struct sha256 *c, unsigned char out[32])
{
	uint64_t bits = c->total * 8;
	unsigned char pad = 0x80, zero = 0, len[8];
	sha256_update(c, &pad, 1);
	while (c->fill != 56)
		sha256_update(c, &zero, 1);
	for (int i = 0; i < 8; i++)
		len[i] = (unsigned char)(bits >> (56 - 8 * i));
	sha256_update(c, len, 8);
	for (int i = 0; i < 8; i++)
		for (int j = 0; j < 4; j++)
			out[4 * i + j] = (unsigned char)(c->h[i] >> (24 - 8 * j));
}

static void put_file_sha256(struct buf *b, const char *path)
{
	static unsigned char chunk[1 << 16];
	struct sha256 c;
	unsigned char d[32];
	int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		die("open", path);
	sha256_init(&c);
	for (;;) {
		ssize_t n = read(fd, chunk, sizeof chunk);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			die("read", path);
		if (n == 0)
			break;
		sha256_update(&c, chunk, (size_t)n);
	}
	close(fd);
	sha256_final(&c, d);
	put_hex(b, d, 32);
}

/* ---- xattrs: name=hex, sorted ---- */
static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static void put_xattrs(struct buf *b, const char *path)
{
	static char names[MAX_XATTR];
	static unsigned char value[MAX_XATTR];
	ssize_t n = llistxattr(path, names, sizeof names);
	if (n < 0 && (errno == ENOTSUP || errno == ENODATA))
		n = 0;
	if (n < 0)
		die("llistxattr", path);
	char *list[4096];
	size_t count = 0;
	for (char *p = names; p < names + n && count < 4096; p += strlen(p) + 1)
		list[count++] = p;
	if (count == 0) {
		puts_(b, "-");
		return;
	}
	qsort(list, count, sizeof list[0], cmp_str);
	for (size_t i = 0; i < count; i++) {
		ssize_t v = lgetxattr(path, list[i], value, sizeof value);
		if (v < 0)
			die("lgetxattr", path);
		if (i)
			puts_(b, ",");
		put_escaped(b, (const unsigned char *)list[i], strlen(list[i]));
		puts_(b, "=");
		put_hex(b, value, (size_t)v);
	}
}

/* ---- the walk ---- */
static char **lines;
static size_t nlines, caplines;

static void add_line(char *line)
{
	if (nlines == MAX_ENTRIES) {
		fprintf(stderr, "walk: more than %d paths; refusing to go on\n", MAX_ENTRIES);
		exit(2);
	}
	if (nlines == caplines) {
		caplines = caplines ? caplines * 2 : 1024;
		lines = xrealloc(lines, caplines * sizeof *lines);
	}
	lines[nlines++] = line;
}

static void walk(const char *full, const char *rel)
{
	struct stat st;
	struct buf b = {0};
	if (lstat(full, &st) < 0)
		die("lstat", full);
	put_escaped(&b, (const unsigned char *)rel, strlen(rel));
	char type = S_ISREG(st.st_mode) ? 'f' : S_ISDIR(st.st_mode) ? 'd' : S_ISLNK(st.st_mode) ? 'l'
		  : S_ISCHR(st.st_mode) ? 'c' : S_ISBLK(st.st_mode) ? 'b' : S_ISFIFO(st.st_mode) ? 'p' : 's';
	put(&b, "\t", 1);
	put(&b, &type, 1);
	putf(&b, "\t%04llo", st.st_mode & 07777);
	putf(&b, "\t%llu", st.st_uid);
	putf(&b, "\t%llu", st.st_gid);
	if (type == 'd')
		puts_(&b, "\t-");
	else
		putf(&b, "\t%llu", (unsigned long long)st.st_size);
	if (type == 'd')
		puts_(&b, "\t-");
	else
		putf(&b, "\t%llu", (unsigned long long)st.st_nlink);
	putf(&b, "\t%lld", (long long)st.st_mtime);
	if (type == 'c' || type == 'b') {
		putf(&b, "\t%llu", major(st.st_rdev));
		putf(&b, ":%llu", minor(st.st_rdev));
	} else {
		puts_(&b, "\t-");
	}
	puts_(&b, "\t");
	if (type == 'l') {
		char target[4097];
		ssize_t n = readlink(full, target, sizeof target);
		if (n < 0 || n == (ssize_t)sizeof target)
			die("readlink", full);
		put_escaped(&b, (unsigned char *)target, (size_t)n);
	} else {
		puts_(&b, "-");
	}
	puts_(&b, "\t");
	put_xattrs(&b, full);
	puts_(&b, "\t");
	if (type == 'f')
		put_file_sha256(&b, full);
	else
		puts_(&b, "-");
	add_line(b.s);

	if (type != 'd')
		return;
	DIR *d = opendir(full);
	if (!d)
		die("opendir", full);
	struct dirent *e;
	errno = 0;
	while ((e = readdir(d))) {
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		size_t lf = strlen(full), lr = strlen(rel), ln = strlen(e->d_name);
		char *cf = xrealloc(NULL, lf + ln + 2), *cr = xrealloc(NULL, lr + ln + 2);
		sprintf(cf, "%s/%s", full, e->d_name);
		if (!strcmp(rel, "."))
			strcpy(cr, e->d_name);
		else
			sprintf(cr, "%s/%s", rel, e->d_name);
		walk(cf, cr);
		free(cf);
		free(cr);
		errno = 0;
	}
	if (errno)
		die("readdir", full);
	closedir(d);
}

static int cmp_line(const void *a, const void *b)
{
	const char *x = *(char *const *)a, *y = *(char *const *)b;
	size_t lx = strcspn(x, "\t"), ly = strcspn(y, "\t");
	int c = memcmp(x, y, lx < ly ? lx : ly);
	return c ? c : (lx > ly) - (lx < ly);
}

/* ---- compare ---- */
static int split(char *line, char *f[NFIELDS])
{
	int n = 0;
	for (char *p = line; n < NFIELDS; n++) {
		f[n] = p;
		p = strchr(p, '\t');
		if (!p)
			return n + 1;
		*p++ = 0;
	}
	return -1;
}

static char **read_manifest(const char *path, size_t *count)
{
	FILE *f = fopen(path, "r");
	if (!f)
		die("open", path);
	char **out = NULL, *line = NULL;
	size_t n = 0, cap = 0, lcap = 0;
	ssize_t len;
	while ((len = getline(&line, &lcap, f)) >= 0) {
		if (len && line[len - 1] == '\n')
			line[len - 1] = 0;
		if (n == MAX_ENTRIES) {
			fprintf(stderr, "walk: %s has more than %d lines\n", path, MAX_ENTRIES);
			exit(2);
		}
		if (n == cap) {
			cap = cap ? cap * 2 : 1024;
			out = xrealloc(out, cap * sizeof *out);
		}
		out[n++] = strdup(line);
	}
	fclose(f);
	free(line);
	qsort(out, n, sizeof *out, cmp_line);
	*count = n;
	return out;
}

/* ignore[k]: NULL compares field k, "" ignores it for every path, else for these types only. */
static int ignored(const char *const ignore[NFIELDS], int k, const char *type)
{
	return ignore[k] && (!ignore[k][0] || strchr(ignore[k], type[0]));
}

static int compare(char **exp, size_t ne, char **got, size_t ng, const char *const ignore[NFIELDS])
{
	size_t i = 0, j = 0, diffs = 0, per_field[NFIELDS] = {0}, missing = 0, extra = 0;
	const size_t SHOW = 60;
	while (i < ne || j < ng) {
		int c = i == ne ? 1 : j == ng ? -1 : cmp_line(&exp[i], &got[j]);
		if (c < 0) {
			if (diffs++ < SHOW)
				printf("missing %.*s\n", (int)strcspn(exp[i], "\t"), exp[i]);
			missing++, i++;
		} else if (c > 0) {
			if (diffs++ < SHOW)
				printf("extra   %.*s\n", (int)strcspn(got[j], "\t"), got[j]);
			extra++, j++;
		} else {
			char *fe[NFIELDS], *fg[NFIELDS];
			if (split(exp[i], fe) != NFIELDS || split(got[j], fg) != NFIELDS) {
				fprintf(stderr, "walk: malformed manifest line near %s\n", exp[i]);
				exit(2);
			}
			for (int k = 1; k < NFIELDS; k++) {
				if (ignored(ignore, k, fe[1]) || !strcmp(fe[k], fg[k]))
					continue;
				if (diffs++ < SHOW)
					printf("differs %s: %s expected %.200s, got %.200s\n", fe[0], FIELD[k], fe[k], fg[k]);
				per_field[k]++;
			}
			i++, j++;
		}
	}
	if (diffs) {
		printf("summary: %zu differences (%zu missing, %zu extra", diffs, missing, extra);
		for (int k = 1; k < NFIELDS; k++)
			if (per_field[k])
				printf(", %zu %s", per_field[k], FIELD[k]);
		printf(")\n");
	}
	return diffs ? 1 : 0;
}

int main(int argc, char **argv)
{
	const char *expected = NULL, *root = NULL;
	const char *ignore[NFIELDS] = {0};
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--compare") && i + 1 < argc) {
			expected = argv[++i];
		} else if (!strcmp(argv[i], "--ignore") && i + 1 < argc) {
			char *list = strdup(argv[++i]);
			for (char *t = strtok(list, ","); t; t = strtok(NULL, ",")) {
				char *types = strchr(t, ':');
				int k;

				if (types)
					*types++ = 0;
				for (k = 1; k < NFIELDS && strcmp(t, FIELD[k]); k++)
					;
				if (k == NFIELDS) {
					fprintf(stderr, "walk: --ignore %s: not a field (type mode uid gid size nlink mtime rdev target xattrs sha256)\n", t);
					return 2;
				}
				ignore[k] = types ? types : "";
			}
		} else if (!root && argv[i][0] != '-') {
			root = argv[i];
		} else {
			fprintf(stderr, "usage: walk [--compare EXPECTED] [--ignore FIELD,...] ROOT\n");
			return 2;
		}
	}
	if (!root) {
		fprintf(stderr, "usage: walk [--compare EXPECTED] [--ignore FIELD,...] ROOT\n");
		return 2;
	}
	walk(root, ".");
	qsort(lines, nlines, sizeof *lines, cmp_line);
	if (!expected) {
		for (size_t i = 0; i < nlines; i++)
			puts(lines[i]);
		return fflush(stdout) ? 2 : 0;
	}
	size_t ne;
	char **exp = read_manifest(expected, &ne);
	int r = compare(exp, ne, lines, nlines, ignore);
	if (!r)
		printf("same: %zu paths\n", nlines);
	return r;
}
