/*
 * Storage fault injection for Hearth's tests, loaded with LD_PRELOAD into a real
 * Hearth process (the node, the app, `hearth-models`). It numbers every storage write the process makes under one folder
 * (the data folder): data writes, syncs, truncations, file creations, renames and links.
 * From the write numbered HEARTH_FAULT_AT on, each such write fails with ENOSPC, EIO or EROFS
 * (HEARTH_FAULT_MODE=enospc|eio|erofs) until the file HEARTH_FAULT_HEAL exists (the owner freed
 * space); with HEARTH_FAULT_MODE=kill the process is killed (SIGKILL) at that write instead.
 * With HEARTH_FAULT_TRIGGER instead, the writes fail while that file exists (and the heal
 * file does not): a disk that fills at a moment the test chooses.
 * HEARTH_FAULT_LOG, when set, gets one line per numbered write: "N operation path".
 *
 * Writes elsewhere (standard output, logs, the model store outside the folder) pass through
 * unnumbered.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

enum mode { MODE_ENOSPC, MODE_EIO, MODE_EROFS, MODE_KILL };

static const char *fault_dir;
static size_t fault_dir_len;
static long fault_at = -1;
static enum mode fault_mode = MODE_ENOSPC;
static const char *heal_file;
static const char *trigger_file;
static int log_fd = -1;
static long numbered;

__attribute__((constructor)) static void fault_init(void) {
    fault_dir = getenv("HEARTH_FAULT_DIR");
    if (fault_dir != NULL) {
        fault_dir_len = strlen(fault_dir);
    }
    const char *at = getenv("HEARTH_FAULT_AT");
    if (at != NULL) {
        fault_at = atol(at);
    }
    const char *mode = getenv("HEARTH_FAULT_MODE");
    if (mode != NULL && strcmp(mode, "eio") == 0) {
        fault_mode = MODE_EIO;
    } else if (mode != NULL && strcmp(mode, "erofs") == 0) {
        fault_mode = MODE_EROFS;
    } else if (mode != NULL && strcmp(mode, "kill") == 0) {
        fault_mode = MODE_KILL;
    }
    heal_file = getenv("HEARTH_FAULT_HEAL");
    trigger_file = getenv("HEARTH_FAULT_TRIGGER");
    const char *log = getenv("HEARTH_FAULT_LOG");
    if (log != NULL) {
        log_fd = (int)syscall(SYS_openat, AT_FDCWD, log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    }
}

static int path_is_watched(const char *path) {
    if (fault_dir == NULL || path == NULL) {
        return 0;
    }
    if (path[0] == '/') {
        return strncmp(path, fault_dir, fault_dir_len) == 0;
    }
    char cwd[PATH_MAX];
    if (getcwd(cwd, sizeof cwd) == NULL) {
        return 0;
    }
    size_t len = strlen(cwd);
    return strncmp(cwd, fault_dir, len < fault_dir_len ? len : fault_dir_len) == 0 && len >= fault_dir_len;
}

static int fd_is_watched(int fd, char *path, size_t size) {
    if (fault_dir == NULL) {
        return 0;
    }
    char link[64];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, size - 1);
    if (n < 0) {
        return 0;
    }
    path[n] = '\0';
    return strncmp(path, fault_dir, fault_dir_len) == 0;
}

/* Number this write; the errno it must fail with, or 0 to let it through. */
static int numbered_write(const char *operation, const char *path) {
    long n = __atomic_add_fetch(&numbered, 1, __ATOMIC_SEQ_CST);
    if (log_fd >= 0) {
        char line[PATH_MAX + 64];
        int len = snprintf(line, sizeof line, "%ld %s %s\n", n, operation, path);
        if (len > 0) {
            syscall(SYS_write, log_fd, line, (size_t)len);
        }
    }
    int armed = trigger_file != NULL ? access(trigger_file, F_OK) == 0 : fault_at > 0 && n >= fault_at;
    if (!armed) {
        return 0;
    }
    if (heal_file != NULL && access(heal_file, F_OK) == 0) {
        return 0;
    }
    if (fault_mode == MODE_KILL) {
        if (trigger_file != NULL || n == fault_at) {
            kill(getpid(), SIGKILL);
        }
        return 0;
    }
    switch (fault_mode) {
    case MODE_EIO:
        return EIO;
    case MODE_EROFS:
        return EROFS;
    default:
        return ENOSPC;
    }
}

#define REAL(name) \
    static __typeof__(name) *real_##name; \
    if (real_##name == NULL) { \
        real_##name = (__typeof__(name) *)dlsym(RTLD_NEXT, #name); \
    }

#define FD_WRITE(operation, fd) \
    do { \
        char path_[PATH_MAX]; \
        if (fd_is_watched(fd, path_, sizeof path_)) { \
            int error_ = numbered_write(operation, path_); \
            if (error_ != 0) { \
                errno = error_; \
                return -1; \
            } \
        } \
    } while (0)

#define PATH_WRITE(operation, path) \
    do { \
        if (path_is_watched(path)) { \
            int error_ = numbered_write(operation, path); \
            if (error_ != 0) { \
                errno = error_; \
                return -1; \
            } \
        } \
    } while (0)

ssize_t write(int fd, const void *buf, size_t count) {
    REAL(write);
    FD_WRITE("write", fd);
    return real_write(fd, buf, count);
}

ssize_t pwrite(int fd, const void *buf, size_t count, off_t offset) {
    REAL(pwrite);
    FD_WRITE("pwrite", fd);
    return real_pwrite(fd, buf, count, offset);
}

ssize_t pwrite64(int fd, const void *buf, size_t count, off64_t offset) {
    REAL(pwrite64);
    FD_WRITE("pwrite", fd);
    return real_pwrite64(fd, buf, count, offset);
}

ssize_t writev(int fd, const struct iovec *iov, int iovcnt) {
    REAL(writev);
    FD_WRITE("writev", fd);
    return real_writev(fd, iov, iovcnt);
}

int fsync(int fd) {
    REAL(fsync);
    FD_WRITE("fsync", fd);
    return real_fsync(fd);
}

int fdatasync(int fd) {
    REAL(fdatasync);
    FD_WRITE("fdatasync", fd);
    return real_fdatasync(fd);
}

int sync_file_range(int fd, off64_t offset, off64_t nbytes, unsigned int flags) {
    REAL(sync_file_range);
    FD_WRITE("sync_file_range", fd);
    return real_sync_file_range(fd, offset, nbytes, flags);
}

int ftruncate(int fd, off_t length) {
    REAL(ftruncate);
    FD_WRITE("ftruncate", fd);
    return real_ftruncate(fd, length);
}

int ftruncate64(int fd, off64_t length) {
    REAL(ftruncate64);
    FD_WRITE("ftruncate", fd);
    return real_ftruncate64(fd, length);
}

int fallocate64(int fd, int mode, off64_t offset, off64_t len) {
    REAL(fallocate64);
    FD_WRITE("fallocate", fd);
    return real_fallocate64(fd, mode, offset, len);
}

int rename(const char *from, const char *to) {
    REAL(rename);
    PATH_WRITE("rename", to);
    return real_rename(from, to);
}

int renameat(int from_dir, const char *from, int to_dir, const char *to) {
    REAL(renameat);
    PATH_WRITE("rename", to);
    return real_renameat(from_dir, from, to_dir, to);
}

int renameat2(int from_dir, const char *from, int to_dir, const char *to, unsigned int flags) {
    REAL(renameat2);
    PATH_WRITE("rename", to);
    return real_renameat2(from_dir, from, to_dir, to, flags);
}

int link(const char *from, const char *to) {
    REAL(link);
    PATH_WRITE("link", to);
    return real_link(from, to);
}

int linkat(int from_dir, const char *from, int to_dir, const char *to, int flags) {
    REAL(linkat);
    PATH_WRITE("link", to);
    return real_linkat(from_dir, from, to_dir, to, flags);
}

static mode_t creation_mode(int flags, va_list args) {
    return (flags & (O_CREAT | O_TMPFILE)) ? (mode_t)va_arg(args, int) : 0;
}

/* open, open64, openat and openat64: a creation is a numbered write. */
#define OPEN_WRAPPER(name, params, args) \
    int name params { \
        REAL(name); \
        va_list list; \
        va_start(list, flags); \
        mode_t mode = creation_mode(flags, list); \
        va_end(list); \
        if (flags & O_CREAT) { \
            PATH_WRITE("create", path); \
        } \
        return real_##name args; \
    }

OPEN_WRAPPER(open, (const char *path, int flags, ...), (path, flags, mode))
OPEN_WRAPPER(open64, (const char *path, int flags, ...), (path, flags, mode))
OPEN_WRAPPER(openat, (int dir, const char *path, int flags, ...), (dir, path, flags, mode))
OPEN_WRAPPER(openat64, (int dir, const char *path, int flags, ...), (dir, path, flags, mode))
