// The kernel's floor for copying a tree of small files, per syscall sequence, single-threaded:
// what each duty costs before any tool's own overhead. Used for the "why" of the 20,000-file
// target in RESULTS.md.
//
//   cc -O2 -o /tmp/floor bench/floor.c
//   /tmp/floor SEQ SRC DST      (SRC: any tree of folders, files and symlinks)
//
// SEQ:
//   plain   open source, create destination by name, copy_file_range, close both (fcp's and
//           cpz's duty: content and mode, no times)
//   times   plain + fstat source + futimens destination (times kept; a file is visible under
//           its final name while half written)
//   blit    Blit's sequence: fstatat + listxattrat (the walk), open source, O_TMPFILE in the
//           destination folder, copy_file_range, fstat source (change check), futimens,
//           linkat into place, close both (times and xattrs kept; never half written)
//   tmpfile plain, but created unnamed (O_TMPFILE) and linked into place: the cost of never
//           showing a half-written file, alone
//   tmpname plain, but created under a temporary name and renamed into place (rsync's way of
//           never showing a half-written file), for comparison with tmpfile
//   walk    plain + fstatat + listxattrat: the cost of the walk's looks, alone
//   blitdir Blit's duties, but files created by name inside a folder that itself has a
//           temporary name until its files are complete (then renamed into place): the
//           promise kept per folder instead of per file
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#ifndef SYS_listxattrat
#define SYS_listxattrat 465
#endif

static void die(const char *what, const char *name) {
    perror(what);
    fprintf(stderr, "  at %s\n", name);
    exit(1);
}

static void copy_one(const char *seq, int sdir, int ddir, const char *name) {
    struct stat st;
    int tmpfile = strcmp(seq, "blit") == 0 || strcmp(seq, "tmpfile") == 0;
    int blitlike = strcmp(seq, "blit") == 0 || strcmp(seq, "blitdir") == 0;
    if (blitlike || strcmp(seq, "walk") == 0) {
        if (fstatat(sdir, name, &st, AT_SYMLINK_NOFOLLOW) < 0) die("fstatat", name);
        if (syscall(SYS_listxattrat, sdir, name, AT_SYMLINK_NOFOLLOW, NULL, 0) < 0)
            die("listxattrat", name);
    }
    int in = openat(sdir, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (in < 0) die("open source", name);
    int out;
    int named = strcmp(seq, "tmpname") == 0;
    char tmp[300];
    snprintf(tmp, sizeof tmp, ".blit-tmp.%s", name);
    if (tmpfile)
        out = openat(ddir, ".", O_WRONLY | O_TMPFILE | O_CLOEXEC, 0644);
    else if (named)
        out = openat(ddir, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    else
        out = openat(ddir, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (out < 0) die("create", name);
    if (copy_file_range(in, NULL, out, NULL, 1 << 30, 0) < 0) die("copy_file_range", name);
    if (strcmp(seq, "times") == 0 || blitlike) {
        if (fstat(in, &st) < 0) die("fstat", name);
        struct timespec ts[2] = {{0, UTIME_OMIT}, st.st_mtim};
        if (futimens(out, ts) < 0) die("futimens", name);
    }
    if (tmpfile && linkat(out, "", ddir, name, AT_EMPTY_PATH) < 0)
        die("linkat", name);
    if (named && renameat(ddir, tmp, ddir, name) < 0) die("renameat", name);
    close(out);
    close(in);
}

static long files, others;

// Copies the folder `sdir` into `ddir`, recursing; folders and symlinks get what each sequence
// owes them (Blit: times, set on folders after their contents), so trees like the mixed one
// can be measured too.
static void copy_tree(const char *seq, int sdir, int ddir) {
    int dirtmp = strcmp(seq, "blitdir") == 0;
    int times = strcmp(seq, "times") == 0 || strcmp(seq, "blit") == 0 || dirtmp;
    int look = strcmp(seq, "blit") == 0 || strcmp(seq, "walk") == 0 || dirtmp;
    DIR *d = fdopendir(dup(sdir));
    if (!d) die("fdopendir", ".");
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        if (e->d_type == DT_REG) {
            copy_one(seq, sdir, ddir, e->d_name);
            files++;
            continue;
        }
        struct stat st;
        if (fstatat(sdir, e->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0) die("fstatat", e->d_name);
        if (look && syscall(SYS_listxattrat, sdir, e->d_name, AT_SYMLINK_NOFOLLOW, NULL, 0) < 0)
            die("listxattrat", e->d_name);
        others++;
        struct timespec ts[2] = {st.st_atim, st.st_mtim};
        if (S_ISDIR(st.st_mode)) {
            char tmp[300];
            snprintf(tmp, sizeof tmp, ".blit-tmp.%s", e->d_name);
            const char *made = dirtmp ? tmp : e->d_name;
            if (mkdirat(ddir, made, 0700) < 0) die("mkdirat", e->d_name);
            int s2 = openat(sdir, e->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            int d2 = openat(ddir, made, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (s2 < 0 || d2 < 0) die("open folder", e->d_name);
            copy_tree(seq, s2, d2);
            if (dirtmp && renameat(ddir, tmp, ddir, e->d_name) < 0) die("renameat", e->d_name);
            if (fchmod(d2, st.st_mode & 07777) < 0) die("fchmod", e->d_name);
            if (times && futimens(d2, ts) < 0) die("futimens", e->d_name);
            close(s2);
            close(d2);
        } else if (S_ISLNK(st.st_mode)) {
            char target[4096];
            ssize_t n = readlinkat(sdir, e->d_name, target, sizeof target - 1);
            if (n < 0) die("readlinkat", e->d_name);
            target[n] = 0;
            if (symlinkat(target, ddir, e->d_name) < 0) die("symlinkat", e->d_name);
            if (times && utimensat(ddir, e->d_name, ts, AT_SYMLINK_NOFOLLOW) < 0)
                die("utimensat", e->d_name);
        }
    }
    closedir(d);
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s plain|times|tmpfile|tmpname|walk|blit|blitdir SRC DST\n", argv[0]);
        return 2;
    }
    const char *seq = argv[1];
    if (mkdir(argv[3], 0755) < 0) die("mkdir", argv[3]);
    int sroot = open(argv[2], O_RDONLY | O_DIRECTORY), droot = open(argv[3], O_RDONLY | O_DIRECTORY);
    if (sroot < 0 || droot < 0) die("open roots", argv[2]);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    copy_tree(seq, sroot, droot);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double s = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
    printf("%s: %ld files (and %ld folders and links) in %.3f s, %.1f us per file\n", seq, files,
           others, s, s / files * 1e6);
    return 0;
}
