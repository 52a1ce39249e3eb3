// The kernel's floor for a no-op mirror: the look every entry of both trees needs before a tool
// can say "nothing changed", with no tool's own overhead. Each tree is walked by its own thread,
// so on two cores this is the wall time of perfect parallelism. Used for the "why" of the no-op
// target in RESULTS.md.
//
//   cc -O2 -pthread -o /tmp/noop-floor bench/noop-floor.c
//   /tmp/noop-floor lstat|xattrs SRC DST
//
//   lstat   getdents + one fstatat per entry, relative to its folder (rsync -a's duty)
//   xattrs  lstat + one listxattrat size query per entry (Blit's default duty, and rsync -aX's
//           need to know whether there are xattrs to compare)
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
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

struct linux_dirent64 {
    unsigned long long d_ino;
    long long d_off;
    unsigned short d_reclen;
    unsigned char d_type;
    char d_name[];
};

static int with_xattrs;

struct job {
    const char *root;
    long entries;
};

static void walk(int dfd, long *entries) {
    char buf[32768];
    long k;
    while ((k = syscall(SYS_getdents64, dfd, buf, sizeof buf)) > 0) {
        for (long off = 0; off < k;) {
            struct linux_dirent64 *d = (void *)(buf + off);
            off += d->d_reclen;
            if (!strcmp(d->d_name, ".") || !strcmp(d->d_name, "..")) continue;
            struct stat st;
            if (fstatat(dfd, d->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0) { perror(d->d_name); exit(1); }
            if (with_xattrs && syscall(SYS_listxattrat, dfd, d->d_name, AT_SYMLINK_NOFOLLOW, NULL, 0) < 0) {
                perror(d->d_name);
                exit(1);
            }
            ++*entries;
            if (S_ISDIR(st.st_mode)) {
                int c = openat(dfd, d->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                if (c < 0) { perror(d->d_name); exit(1); }
                walk(c, entries);
                close(c);
            }
        }
    }
}

static void *run(void *arg) {
    struct job *j = arg;
    int fd = open(j->root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) { perror(j->root); exit(1); }
    walk(fd, &j->entries);
    close(fd);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 4 || (strcmp(argv[1], "lstat") && strcmp(argv[1], "xattrs"))) {
        fprintf(stderr, "usage: %s lstat|xattrs SRC DST\n", argv[0]);
        return 2;
    }
    with_xattrs = !strcmp(argv[1], "xattrs");
    struct job jobs[2] = {{argv[2], 0}, {argv[3], 0}};
    pthread_t t[2];
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < 2; i++) pthread_create(&t[i], NULL, run, &jobs[i]);
    for (int i = 0; i < 2; i++) pthread_join(t[i], NULL);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double s = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
    long n = jobs[0].entries + jobs[1].entries;
    printf("%s: %ld entries in %.3f s, %.2f us per entry\n", argv[1], n, s, s / n * 1e6);
    return 0;
}
