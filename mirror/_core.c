/* mirror._core: mirror's per-folder loops in C, with the pure-Python code as their reference.
 *
 * list_pair and stat_pair list a folder pair by descriptors as plan/scan.py's functions of
 * those names do, and leave out the regular files the quick check finds unchanged before any
 * Python object is made for them; a slow (remote) store is left to the pure code's threads.
 *
 * copy_files copies a batch of small files of one SRC folder into one DST folder with their
 * metadata, exactly as run/copyfile.py's FileCopier does for each (descriptor-relative,
 * O_NOFOLLOW, an O_TMPFILE inode linked under a new name or an O_EXCL temporary name renamed
 * over an old one, the bytes moved by the ladder's method for DST's filesystem, metadata on
 * the descriptor). It decides nothing: any item it cannot finish is undone and declined, and
 * the pure code redoes it, so errors, retries and edge cases are decided in one place.
 *
 * Both release the GIL for their system calls (Python objects are read before, made after).
 *
 * Linux only (O_TMPFILE, copy_file_range, /proc/self/fd); where it does not build, mirror
 * runs its pure-Python code.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/random.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#ifndef FICLONE
#define FICLONE _IOW(0x94, 9, int)
#endif

/* The fields of model.Entry and model.Action read here, by position (they are NamedTuples);
 * LAYOUT exports them and mirror/core.py uses this module only if they still match. */
enum { E_MODE = 2, E_SIZE = 3, E_MTIME = 4, E_UID = 5, E_GID = 6, E_CTIME = 12, E_ATIME = 13,
       E_LENGTH = 14 };
enum { A_PATH = 1, A_SRC = 3, A_DST = 4, A_LENGTH = 6 };
/* fastcopy.Copier's ladder, as mirror/core.py's Ladder names it. */
enum { CLONE = 0, RANGE = 1, LOOP = 2 };

#define CHUNK (8LL << 20)    /* fastcopy.CHUNK: bytes per copy_file_range or sendfile call */
#define BUFFER (1LL << 20)   /* fastcopy.BUFFER: up to this, one read and one write */
#define MAX_MODES 16         /* requested modes learned per call (FolderFacts) */
#define READ_FLAGS (O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC)
#define WRITE_FLAGS (O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC)
#define ANONYMOUS_FLAGS (O_WRONLY | O_TMPFILE | O_CLOEXEC)
#define TEMP_PREFIX ".mirror-tmp-"   /* paths.temp_name: the prefix and 16 hex digits */

#define RETRY(call) ({ long _r; do _r = (long)(call); while (_r < 0 && errno == EINTR); _r; })

typedef struct {               /* one file to copy, read from its Action under the GIL */
    const char *name;          /* inside the Action's path: the batch's tuple keeps it alive */
    mode_t mode;
    long long size, mtime_ns, ctime_ns, atime_ns;
    uid_t uid;
    gid_t gid;
    int new;                   /* DST has no entry of that name */
} item_t;

typedef struct {               /* FolderFacts: what a new file in the DST folder gets */
    int known, learned_from;   /* owner known; modes[learned_from:] were learned by this call */
    uid_t uid;
    gid_t gid;
    int count;
    mode_t requested[MAX_MODES], got[MAX_MODES];
} facts_t;

typedef struct {               /* what every item of one call shares */
    int src_dir, dst_dir, owner, method, anonymous;
    mode_t perm_bits;
    char *buffer;
    facts_t facts;
} batch_t;

/* ---- Reading the arguments (with the GIL) ---- */

static int as_long_long(PyObject *tuple, Py_ssize_t index, long long *out)
{
    *out = PyLong_AsLongLong(PyTuple_GET_ITEM(tuple, index));
    return *out == -1 && PyErr_Occurred() ? -1 : 0;
}

/* An Action's fields into `item`; -1 with an exception set if it is not one. */
static int read_item(PyObject *action, item_t *item)
{
    if (!PyTuple_Check(action) || PyTuple_GET_SIZE(action) != A_LENGTH) {
        PyErr_SetString(PyExc_TypeError, "copy_files: an item is not an Action");
        return -1;
    }
    PyObject *path = PyTuple_GET_ITEM(action, A_PATH), *src = PyTuple_GET_ITEM(action, A_SRC);
    if (!PyBytes_Check(path) || !PyTuple_Check(src) || PyTuple_GET_SIZE(src) != E_LENGTH) {
        PyErr_SetString(PyExc_TypeError, "copy_files: an Action without a bytes path and an Entry");
        return -1;
    }
    const char *text = PyBytes_AS_STRING(path);
    const char *slash = memrchr(text, '/', PyBytes_GET_SIZE(path));
    item->name = slash ? slash + 1 : text;
    long long mode, uid, gid;
    if (as_long_long(src, E_MODE, &mode) || as_long_long(src, E_SIZE, &item->size)
        || as_long_long(src, E_MTIME, &item->mtime_ns) || as_long_long(src, E_CTIME, &item->ctime_ns)
        || as_long_long(src, E_ATIME, &item->atime_ns) || as_long_long(src, E_UID, &uid)
        || as_long_long(src, E_GID, &gid))
        return -1;
    item->mode = (mode_t)mode;
    item->uid = (uid_t)uid;
    item->gid = (gid_t)gid;
    item->new = PyTuple_GET_ITEM(action, A_DST) == Py_None;
    if ((Py_ssize_t)strlen(text) != PyBytes_GET_SIZE(path) || !*item->name)
        item->name = NULL;  /* a NUL inside, or no name: declined, the pure code says why */
    return 0;
}

/* FolderFacts' owner and modes into `facts`. */
static int read_facts(PyObject *object, facts_t *facts)
{
    PyObject *owner = PyObject_GetAttrString(object, "owner");
    PyObject *modes = owner ? PyObject_GetAttrString(object, "modes") : NULL;
    int result = -1;
    memset(facts, 0, sizeof *facts);
    if (!modes)
        goto done;
    if (!PyDict_Check(modes)) {
        PyErr_SetString(PyExc_TypeError, "copy_files: facts.modes is not a dict");
        goto done;
    }
    if (owner != Py_None) {
        unsigned long uid, gid;
        if (!PyArg_ParseTuple(owner, "kk", &uid, &gid))
            goto done;
        facts->known = 1;
        facts->uid = (uid_t)uid;
        facts->gid = (gid_t)gid;
    }
    PyObject *key, *value;
    Py_ssize_t at = 0;
    while (facts->count < MAX_MODES && PyDict_Next(modes, &at, &key, &value)) {
        long requested = PyLong_AsLong(key), got = PyLong_AsLong(value);
        if (PyErr_Occurred())
            goto done;
        facts->requested[facts->count] = (mode_t)requested;
        facts->got[facts->count++] = (mode_t)got;
    }
    facts->learned_from = facts->count;
    result = 0;
done:
    Py_XDECREF(owner);
    Py_XDECREF(modes);
    return result;
}

/* What this call learned back into FolderFacts, for the pure code and the next call. */
static int write_facts(PyObject *object, const facts_t *facts)
{
    if (facts->learned_from == facts->count)
        return 0;
    PyObject *modes = PyObject_GetAttrString(object, "modes");
    int result = modes ? 0 : -1;
    for (int i = facts->learned_from; i < facts->count && result == 0; i++) {
        PyObject *key = PyLong_FromLong(facts->requested[i]), *value = PyLong_FromLong(facts->got[i]);
        result = key && value ? PyDict_SetItem(modes, key, value) : -1;
        Py_XDECREF(key);
        Py_XDECREF(value);
    }
    Py_XDECREF(modes);
    if (result == 0) {
        PyObject *owner = Py_BuildValue("(kk)", (unsigned long)facts->uid, (unsigned long)facts->gid);
        result = owner ? PyObject_SetAttrString(object, "owner", owner) : -1;
        Py_XDECREF(owner);
    }
    return result;
}

/* ---- Copying one file (without the GIL); each step returns -errno on failure ---- */

/* FolderFacts.learn: the permission bits a file created with `requested` got, one fstat per
 * requested mode and folder. */
static int learn(facts_t *facts, int fd, mode_t requested, mode_t *got)
{
    for (int i = 0; i < facts->count; i++)
        if (facts->requested[i] == requested) {
            *got = facts->got[i];
            return 0;
        }
    struct stat st;
    if (fstat(fd, &st) < 0)
        return -errno;
    facts->known = 1;
    facts->uid = st.st_uid;
    facts->gid = st.st_gid;
    *got = st.st_mode & 07777;
    if (facts->count < MAX_MODES) {
        facts->requested[facts->count] = requested;
        facts->got[facts->count++] = *got;
    }
    return 0;
}

static int write_all(int fd, const char *data, long long length)
{
    while (length > 0) {
        long written = RETRY(write(fd, data, (size_t)length));
        if (written <= 0)
            return written < 0 ? -errno : -EIO;
        data += written;
        length -= written;
    }
    return 0;
}

/* fastcopy.Copier for a small file: its bytes by the ladder's method, up to `size` (fewer if
 * the file shrank; the fstat after the copy tells). A method this filesystem refuses declines
 * the file: the pure code then steps down the ladder, and the next call gets the new method. */
static int copy_bytes(const batch_t *batch, int src, int out, long long size)
{
    long long done = 0;
    if (size == 0)
        return 0;
    if (batch->method == CLONE)
        return RETRY(ioctl(out, FICLONE, src)) < 0 ? -errno : 0;
    if (batch->method == LOOP && size <= BUFFER) {  /* copy_local: one read, one write */
        while (done < size) {
            long got = RETRY(read(src, batch->buffer + done, (size_t)(size - done)));
            if (got < 0)
                return -errno;
            if (got == 0)
                break;
            done += got;
        }
        return write_all(out, batch->buffer, done);
    }
    while (done < size) {  /* copy_range, or copy_local's sendfile for a file over BUFFER */
        size_t count = (size_t)(size - done < CHUNK ? size - done : CHUNK);
        long moved = batch->method == LOOP ? RETRY(sendfile(out, src, NULL, count))
                                           : RETRY(copy_file_range(src, NULL, out, NULL, count, 0));
        if (moved < 0)
            return -errno;
        if (moved == 0)
            break;
        done += moved;
    }
    return 0;
}

/* set_meta: owner first (chown clears setuid), then permissions, then times. */
static int set_meta(const batch_t *batch, const item_t *item, int out, mode_t perms, mode_t got)
{
    if (batch->owner && (item->uid != batch->facts.uid || item->gid != batch->facts.gid)
        && fchown(out, item->uid, item->gid) < 0)
        return -errno;
    if (perms != got && RETRY(fchmod(out, perms)) < 0)
        return -errno;
    struct timespec times[2];
    long long stamps[2] = {item->atime_ns, item->mtime_ns};
    for (int i = 0; i < 2; i++) {  /* floor division, as os.utime(ns=...) does */
        times[i].tv_sec = (time_t)(stamps[i] / 1000000000LL);
        times[i].tv_nsec = (long)(stamps[i] % 1000000000LL);
        if (times[i].tv_nsec < 0) {
            times[i].tv_nsec += 1000000000L;
            times[i].tv_sec -= 1;
        }
    }
    return RETRY(futimens(out, times)) < 0 ? -errno : 0;
}

/* paths.temp_name: a fresh hidden name, 16 random hex digits. */
static int temp_name(char *out)
{
    unsigned char random[8];
    if (RETRY(getrandom(random, sizeof random, 0)) != (long)sizeof random)
        return errno ? -errno : -EIO;
    char *at = out + sprintf(out, "%s", TEMP_PREFIX);
    for (size_t i = 0; i < sizeof random; i++)
        at += sprintf(at, "%02x", random[i]);
    return 0;
}

/* SRC's file is still as listed: size, mtime, ctime, and a regular file (tree.unchanged). */
static int unchanged(int src, const item_t *item)
{
    struct stat st;
    if (fstat(src, &st) < 0)
        return -errno;
    int same = S_ISREG(st.st_mode) && st.st_size == item->size
               && st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec == item->mtime_ns
               && st.st_ctim.tv_sec * 1000000000LL + st.st_ctim.tv_nsec == item->ctime_ns;
    return same ? 0 : -EAGAIN;
}

/* FileCopier.copy_once for one item: its size, or -errno with nothing of it left in DST but
 * what a failed link or rename left as it was. */
static long long copy_one(batch_t *batch, const item_t *item)
{
    if (!item->name)
        return -EINVAL;
    int src = RETRY(openat(batch->src_dir, item->name, READ_FLAGS));
    if (src < 0)
        return -errno;
    mode_t perms = item->mode & batch->perm_bits, requested, got = 0;
    char tmp[sizeof TEMP_PREFIX + 16], proc[32];
    int named = !(item->new && batch->anonymous), out, error = 0;
    if (named) {
        requested = 0600;
        error = temp_name(tmp);
        out = error ? -1 : RETRY(openat(batch->dst_dir, tmp, WRITE_FLAGS, requested));
    } else {
        requested = perms & 0777;  /* nobody else can open it: its final permissions at once */
        out = RETRY(openat(batch->dst_dir, ".", ANONYMOUS_FLAGS, requested));
    }
    if (out < 0) {
        error = error ? error : -errno;
        close(src);
        return error;
    }
    error = learn(&batch->facts, out, requested, &got);
    if (!error)
        error = copy_bytes(batch, src, out, item->size);
    if (!error)
        error = unchanged(src, item);
    if (!error)
        error = set_meta(batch, item, out, perms, got);
    if (!error && !named) {
        snprintf(proc, sizeof proc, "/proc/self/fd/%d", out);
        if (RETRY(linkat(AT_FDCWD, proc, batch->dst_dir, item->name, AT_SYMLINK_FOLLOW)) < 0)
            error = -errno;  /* EEXIST too: the pure code links it as a temporary name */
    }
    if (close(out) < 0 && !error)
        error = -errno;
    if (!error && named && RETRY(renameat(batch->dst_dir, tmp, batch->dst_dir, item->name)) < 0)
        error = -errno;
    if (error && named)
        unlinkat(batch->dst_dir, tmp, 0);
    close(src);
    return error ? error : item->size;
}

/* ---- Listing a folder pair: scan.list_pair and scan.stat_pair ---- */

#define PROBE_STATS 4          /* scan.PROBE_STATS: lstat calls timed at a folder's start */

typedef struct {               /* one entry's lstat, as a listing keeps it */
    size_t name, length;       /* its name: an offset into its side's `names` */
    int dropped;               /* an unchanged regular file: in neither listing */
    mode_t mode;
    uid_t uid;
    gid_t gid;
    long long size, atime_ns, mtime_ns, ctime_ns;
    unsigned long long ino, dev, nlink, rdev;
} record_t;

typedef struct {               /* one side of a folder pair, listed without the GIL */
    record_t *records;         /* the entries stat'ed (past `most`, names alone are kept) */
    size_t count, room;
    char *names;               /* every name, NUL-terminated, one after the other */
    size_t used, space, named;
    int error;                 /* the errno that ends the listing, 0 if none */
    long long failed;          /* the record it was met at, -1: the folder itself */
    int slow;                  /* the probe found a slow (remote) store */
    int only_names;            /* more than `most` entries: names alone */
} side_t;

static long long nanoseconds(struct timespec at)
{
    return at.tv_sec * 1000000000LL + at.tv_nsec;
}

/* `name` kept, with a new record for its lstat unless `alone`; -1 (side->error ENOMEM) if
 * there is no memory. */
static int add_name(side_t *side, const char *name, size_t length, int alone)
{
    if (!alone && side->count == side->room) {
        size_t room = side->room ? side->room * 2 : 64;
        record_t *records = realloc(side->records, room * sizeof *records);
        if (!records)
            return side->error = ENOMEM, -1;
        side->records = records;
        side->room = room;
    }
    if (side->used + length + 1 > side->space) {
        size_t space = (side->space ? side->space * 2 : 4096) + length + 1;
        char *names = realloc(side->names, space);
        if (!names)
            return side->error = ENOMEM, -1;
        side->names = names;
        side->space = space;
    }
    if (!alone) {
        record_t *record = &side->records[side->count++];
        memset(record, 0, sizeof *record);
        record->name = side->used;
        record->length = length;
    }
    memcpy(side->names + side->used, name, length);
    side->names[side->used + length] = '\0';
    side->used += length + 1;
    side->named++;
    return 0;
}

/* lstat the last record; a name gone since it was listed is forgotten (as if never listed). */
static void stat_last(side_t *side, int dir_fd)
{
    record_t *record = &side->records[side->count - 1];
    struct stat st;
    if (RETRY(fstatat(dir_fd, side->names + record->name, &st, AT_SYMLINK_NOFOLLOW)) < 0) {
        if (errno == ENOENT) {
            side->used = record->name;
            side->count--;
            side->named--;
        } else {
            side->error = errno;
            side->failed = (long long)side->count - 1;
        }
        return;
    }
    record->mode = st.st_mode;
    record->uid = st.st_uid;
    record->gid = st.st_gid;
    record->size = st.st_size;
    record->atime_ns = nanoseconds(st.st_atim);
    record->mtime_ns = nanoseconds(st.st_mtim);
    record->ctime_ns = nanoseconds(st.st_ctim);
    record->ino = st.st_ino;
    record->dev = st.st_dev;
    record->nlink = st.st_nlink;
    record->rdev = st.st_rdev;
}

/* Times the first PROBE_STATS lstat calls of a side, as scan.list_fd does. */
typedef struct {
    struct timespec started;
    long long spent_ns, slow_ns;
    int probed;
} probe_t;

static void stat_probed(side_t *side, int dir_fd, probe_t *probe)
{
    if (probe->probed >= PROBE_STATS) {
        stat_last(side, dir_fd);
        return;
    }
    struct timespec started, ended;
    clock_gettime(CLOCK_MONOTONIC, &started);
    stat_last(side, dir_fd);
    clock_gettime(CLOCK_MONOTONIC, &ended);
    probe->spent_ns += nanoseconds(ended) - nanoseconds(started);
    probe->probed++;
}

static int probe_says_slow(const probe_t *probe)
{
    return probe->probed && probe->spent_ns > probe->probed * probe->slow_ns;
}

/* scan.list_fd: every entry of the folder `dir_fd` with its lstat; past `most` entries (-1: no
 * limit) the names alone; a slow probe stops it (side->slow). */
static void list_side(side_t *side, int dir_fd, long long most, long long slow_ns)
{
    probe_t probe = {.slow_ns = slow_ns};
    side->failed = -1;
    int fd = fcntl(dir_fd, F_DUPFD_CLOEXEC, 0);  /* closedir closes it, not the caller's */
    DIR *dir = fd < 0 ? NULL : fdopendir(fd);
    if (!dir) {
        side->error = errno;
        if (fd >= 0)
            close(fd);
        return;
    }
    rewinddir(dir);
    for (;;) {
        errno = 0;
        struct dirent *item = readdir(dir);
        if (!item) {
            if (errno == EINTR)
                continue;
            side->error = errno;
            break;
        }
        const char *name = item->d_name;
        if (name[0] == '.' && (name[1] == '\0' || (name[1] == '.' && name[2] == '\0')))
            continue;
        if (most >= 0 && (long long)side->named >= most)
            side->only_names = 1;  /* this name is one too many: no record, no lstat more */
        if (add_name(side, name, strlen(name), side->only_names) < 0)
            break;
        if (!side->only_names)
            stat_probed(side, dir_fd, &probe);
        if (side->error)
            break;
        if (probe.probed == PROBE_STATS && probe_says_slow(&probe)) {
            side->slow = 1;
            break;
        }
    }
    if (probe_says_slow(&probe))
        side->slow = 1;
    rewinddir(dir);  /* the caller's descriptor shares the position: left at the start, as */
    closedir(dir);   /* os.scandir leaves it */
}

/* scan.stat_names: lstat the names already in `side`, dropping those gone. */
static void stat_side(side_t *side, int dir_fd, long long slow_ns)
{
    probe_t probe = {.slow_ns = slow_ns};
    side_t listed = *side;  /* the names, stat'ed one by one into place */
    side->failed = -1;
    side->count = 0;
    for (size_t i = 0; i < listed.count && !side->error && !side->slow; i++) {
        side->records[side->count++] = listed.records[i];
        size_t used = side->used, named = side->named;
        stat_probed(side, dir_fd, &probe);
        side->used = used;  /* the names stay where they are: only records move */
        side->named = named;
        if (probe.probed == PROBE_STATS && probe_says_slow(&probe))
            side->slow = 1;
    }
    if (probe_says_slow(&probe))
        side->slow = 1;
}

/* Two names in bytes order, as Python compares them: memcmp, then the shorter first. */
static int order_of(const char *names, const record_t *one, const char *other_names, const record_t *other)
{
    size_t length = one->length < other->length ? one->length : other->length;
    int order = memcmp(names + one->name, other_names + other->name, length);
    return order ? order : (one->length > other->length) - (one->length < other->length);
}

static int compare_names(const void *one, const void *other, void *names)
{
    return order_of(names, one, names, other);
}

/* compare.same_file on both sides' records, in name order: the unchanged ones are dropped. */
static long long drop_unchanged(side_t *src, side_t *dst, int owner)
{
    long long unchanged = 0;
    size_t i = 0, j = 0;
    qsort_r(src->records, src->count, sizeof *src->records, compare_names, src->names);
    qsort_r(dst->records, dst->count, sizeof *dst->records, compare_names, dst->names);
    while (i < src->count && j < dst->count) {
        record_t *one = &src->records[i], *other = &dst->records[j];
        int order = order_of(src->names, one, dst->names, other);
        if (order == 0) {
            if (one->mode == other->mode && S_ISREG(one->mode) && one->size == other->size
                && one->mtime_ns == other->mtime_ns
                && (!owner || (one->uid == other->uid && one->gid == other->gid))) {
                one->dropped = other->dropped = 1;
                unchanged++;
            }
        }
        i += order <= 0;
        j += order >= 0;
    }
    return unchanged;
}

static void free_side(side_t *side)
{
    free(side->records);
    free(side->names);
}

static PyStructSequence_Field stat_fields[] = {
    {"st_mode", NULL}, {"st_ino", NULL}, {"st_dev", NULL}, {"st_nlink", NULL},
    {"st_uid", NULL}, {"st_gid", NULL}, {"st_size", NULL}, {"st_atime_ns", NULL},
    {"st_mtime_ns", NULL}, {"st_ctime_ns", NULL}, {"st_rdev", NULL}, {NULL, NULL},
};

static PyStructSequence_Desc stat_desc = {
    "mirror._core.stat_result", "The fields of an lstat that a listing keeps (os.stat_result's names).",
    stat_fields, 11,
};

typedef struct {
    PyTypeObject *stat_result;
} state_t;

static PyObject *stat_object(PyTypeObject *type, const record_t *record)
{
    PyObject *st = PyStructSequence_New(type);
    if (!st)
        return NULL;
    PyObject *fields[11] = {
        PyLong_FromUnsignedLong(record->mode), PyLong_FromUnsignedLongLong(record->ino),
        PyLong_FromUnsignedLongLong(record->dev), PyLong_FromUnsignedLongLong(record->nlink),
        PyLong_FromUnsignedLong(record->uid), PyLong_FromUnsignedLong(record->gid),
        PyLong_FromLongLong(record->size), PyLong_FromLongLong(record->atime_ns),
        PyLong_FromLongLong(record->mtime_ns), PyLong_FromLongLong(record->ctime_ns),
        PyLong_FromUnsignedLongLong(record->rdev),
    };
    int complete = 1;
    for (int i = 0; i < 11; i++) {
        complete = complete && fields[i];
        if (fields[i])
            PyStructSequence_SET_ITEM(st, i, fields[i]);
        else
            PyStructSequence_SET_ITEM(st, i, Py_NewRef(Py_None));
    }
    if (!complete)
        Py_CLEAR(st);
    return st;
}

/* A side's kept records as {name: stat_result}. */
static PyObject *listing_of(const side_t *side, PyTypeObject *type)
{
    PyObject *listing = PyDict_New();
    for (size_t i = 0; listing && i < side->count; i++) {
        const record_t *record = &side->records[i];
        if (record->dropped)
            continue;
        PyObject *name = PyBytes_FromStringAndSize(side->names + record->name, (Py_ssize_t)record->length);
        PyObject *st = name ? stat_object(type, record) : NULL;
        if (!st || PyDict_SetItem(listing, name, st) < 0)
            Py_CLEAR(listing);
        Py_XDECREF(name);
        Py_XDECREF(st);
    }
    return listing;
}

static int compare_at(const void *one, const void *other, void *names)
{
    /* unsigned bytes, as Python orders bytes (a name holds no NUL) */
    return strcmp((const char *)names + *(const size_t *)one, (const char *)names + *(const size_t *)other);
}

/* Every name a side kept (a big folder's: a million records would cost 100 MB), as bytes,
 * sorted here: the caller cuts them in name order, and a sort in C of 200,000 names takes
 * 30 ms where Python's took 0.2 s a side. */
static PyObject *names_of(const side_t *side)
{
    size_t *at = PyMem_Malloc((side->named ? side->named : 1) * sizeof *at);
    if (!at)
        return PyErr_NoMemory();
    size_t offset = 0;
    for (size_t i = 0; i < side->named; i++) {
        at[i] = offset;
        offset += strlen(side->names + offset) + 1;
    }
    Py_BEGIN_ALLOW_THREADS
    qsort_r(at, side->named, sizeof *at, compare_at, side->names);
    Py_END_ALLOW_THREADS
    PyObject *names = PyList_New((Py_ssize_t)side->named);
    for (Py_ssize_t i = 0; names && i < (Py_ssize_t)side->named; i++) {
        PyObject *name = PyBytes_FromString(side->names + at[i]);
        if (!name)
            Py_CLEAR(names);
        else
            PyList_SET_ITEM(names, i, name);
    }
    PyMem_Free(at);
    return names;
}

/* The OSError a side met, with the name it was met at, as os.stat would raise it. */
static int raise_for(const side_t *side)
{
    errno = side->error;
    if (side->failed < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    const record_t *record = &side->records[side->failed];
    PyObject *name = PyUnicode_DecodeFSDefaultAndSize(side->names + record->name, (Py_ssize_t)record->length);
    if (name) {
        PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, name);
        Py_DECREF(name);
    }
    return -1;
}

/* The answer for a listed pair: None (a side is slow: the pure code lists it with threads),
 * OSError, (names, names) past `most`, or (unchanged, src listing, dst listing). */
static PyObject *answer(PyObject *module, side_t *src, side_t *dst, int quick, int owner)
{
    if (src->slow || dst->slow)
        Py_RETURN_NONE;
    if ((src->error && raise_for(src)) || (dst->error && raise_for(dst)))
        return NULL;
    if (src->only_names || dst->only_names) {
        PyObject *src_names = names_of(src), *dst_names = src_names ? names_of(dst) : NULL;
        PyObject *pair = dst_names ? PyTuple_Pack(2, src_names, dst_names) : NULL;
        Py_XDECREF(src_names);
        Py_XDECREF(dst_names);
        return pair;
    }
    long long unchanged = 0;
    Py_BEGIN_ALLOW_THREADS
    if (quick && dst->count)
        unchanged = drop_unchanged(src, dst, owner);
    Py_END_ALLOW_THREADS
    PyTypeObject *type = ((state_t *)PyModule_GetState(module))->stat_result;
    PyObject *src_listing = listing_of(src, type);
    PyObject *dst_listing = src_listing ? listing_of(dst, type) : NULL;
    PyObject *listed = dst_listing ? Py_BuildValue("(LOO)", unchanged, src_listing, dst_listing) : NULL;
    Py_XDECREF(src_listing);
    Py_XDECREF(dst_listing);
    return listed;
}

/* `owner` as scan takes it: None (no quick check), or whether owners are compared. */
static int read_owner(PyObject *owner, int *quick, int *compare)
{
    *quick = owner != Py_None;
    *compare = *quick ? PyObject_IsTrue(owner) : 0;
    return *compare < 0 ? -1 : 0;
}

PyDoc_STRVAR(list_pair_doc,
"list_pair(src_fd, dst_fd, owner, most, slow_ns) -> tuple | None\n\n"
"scan.list_pair in C (`most` -1: no limit), or None when the first lstat calls of a side\n"
"took over `slow_ns` each on average: a remote store, which the pure code lists with threads.");

static PyObject *list_pair(PyObject *module, PyObject *args)
{
    int src_fd, dst_fd, quick, owner;
    long long most, slow_ns;
    PyObject *owner_object;
    if (!PyArg_ParseTuple(args, "iiOLL:list_pair", &src_fd, &dst_fd, &owner_object, &most, &slow_ns)
        || read_owner(owner_object, &quick, &owner) < 0)
        return NULL;
    side_t src = {0}, dst = {0};
    Py_BEGIN_ALLOW_THREADS
    list_side(&src, src_fd, most, slow_ns);
    if (!src.error && !src.slow && dst_fd >= 0)
        list_side(&dst, dst_fd, most, slow_ns);
    Py_END_ALLOW_THREADS
    PyObject *result = answer(module, &src, &dst, quick, owner);
    free_side(&src);
    free_side(&dst);
    return result;
}

/* The names of a list of bytes into `side`; -1 with an exception set. */
static int read_names(PyObject *list, side_t *side)
{
    if (!PyList_Check(list)) {
        PyErr_SetString(PyExc_TypeError, "stat_pair: names must be a list of bytes");
        return -1;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(list); i++) {
        PyObject *name = PyList_GET_ITEM(list, i);
        if (!PyBytes_Check(name) || (Py_ssize_t)strlen(PyBytes_AS_STRING(name)) != PyBytes_GET_SIZE(name)) {
            PyErr_SetString(PyExc_TypeError, "stat_pair: a name is not bytes without NUL");
            return -1;
        }
        if (add_name(side, PyBytes_AS_STRING(name), (size_t)PyBytes_GET_SIZE(name), 0) < 0) {
            PyErr_NoMemory();
            return -1;
        }
    }
    return 0;
}

PyDoc_STRVAR(stat_pair_doc,
"stat_pair(src_fd, dst_fd, src_names, dst_names, owner, slow_ns) -> tuple | None\n\n"
"scan.stat_pair in C, or None when a side's store is slow (as list_pair).");

static PyObject *stat_pair(PyObject *module, PyObject *args)
{
    int src_fd, dst_fd, quick, owner;
    long long slow_ns;
    PyObject *src_names, *dst_names, *owner_object, *result = NULL;
    if (!PyArg_ParseTuple(args, "iiOOOL:stat_pair", &src_fd, &dst_fd, &src_names, &dst_names,
                          &owner_object, &slow_ns) || read_owner(owner_object, &quick, &owner) < 0)
        return NULL;
    side_t src = {0}, dst = {0};
    if (read_names(src_names, &src) == 0 && (dst_fd < 0 || read_names(dst_names, &dst) == 0)) {
        Py_BEGIN_ALLOW_THREADS
        stat_side(&src, src_fd, slow_ns);
        if (!src.error && !src.slow && dst_fd >= 0)
            stat_side(&dst, dst_fd, slow_ns);
        Py_END_ALLOW_THREADS
        result = answer(module, &src, &dst, quick, owner);
    }
    free_side(&src);
    free_side(&dst);
    return result;
}

/* ---- The module's functions ---- */

PyDoc_STRVAR(copy_files_doc,
"copy_files(src_dir_fd, dst_dir_fd, actions, facts, owner, method, anonymous) -> list\n\n"
"Copy the COPY Actions `actions` (small regular files of one folder, by name) from the\n"
"folder `src_dir_fd` into the folder `dst_dir_fd`, as FileCopier does: `facts` is the DST\n"
"folder's FolderFacts (read and updated), `owner` whether owners are kept, `method` the\n"
"Ladder step for DST's filesystem, `anonymous` whether new files may be O_TMPFILE inodes.\n"
"Returns each item's byte count, in order, up to the first it declined (-errno): that one\n"
"ends the list, undone, for the pure code to redo.");

static PyObject *copy_files(PyObject *module, PyObject *args)
{
    (void)module;
    batch_t batch;
    PyObject *sequence, *facts;
    if (!PyArg_ParseTuple(args, "iiOOpip:copy_files", &batch.src_dir, &batch.dst_dir, &sequence,
                          &facts, &batch.owner, &batch.method, &batch.anonymous))
        return NULL;
    if (batch.method < CLONE || batch.method > LOOP)
        return PyErr_Format(PyExc_ValueError, "copy_files: no method %d", batch.method);
    batch.perm_bits = batch.owner ? 07777 : 01777;  /* setuid/setgid only with their owner */
    batch.buffer = NULL;
    PyObject *actions = PySequence_Tuple(sequence), *result = NULL;  /* holds every path */
    if (!actions || read_facts(facts, &batch.facts) < 0) {
        Py_XDECREF(actions);
        return NULL;
    }
    Py_ssize_t count = PyTuple_GET_SIZE(actions), done = 0;
    item_t *items = PyMem_Calloc(count ? (size_t)count : 1, sizeof *items);
    long long *sizes = PyMem_Calloc(count ? (size_t)count : 1, sizeof *sizes), largest = 0;
    if (!items || !sizes) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        if (read_item(PyTuple_GET_ITEM(actions, i), &items[i]) < 0)
            goto done;
        if (items[i].size > largest)
            largest = items[i].size;
    }
    if (batch.method == LOOP && largest && !(batch.buffer = PyMem_RawMalloc(
            (size_t)(largest < BUFFER ? largest : BUFFER)))) {
        PyErr_NoMemory();
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS
    while (done < count && (sizes[done] = copy_one(&batch, &items[done])) >= 0)
        done++;
    Py_END_ALLOW_THREADS
    if (done < count)
        done++;  /* the declined one ends the list */
    if (write_facts(facts, &batch.facts) < 0 || !(result = PyList_New(done)))
        goto done;
    for (Py_ssize_t i = 0; i < done; i++) {
        PyObject *size = PyLong_FromLongLong(sizes[i]);
        if (!size) {
            Py_CLEAR(result);
            goto done;
        }
        PyList_SET_ITEM(result, i, size);
    }
done:
    PyMem_RawFree(batch.buffer);
    PyMem_Free(items);
    PyMem_Free(sizes);
    Py_DECREF(actions);
    return result;
}

static PyMethodDef methods[] = {
    {"copy_files", copy_files, METH_VARARGS, copy_files_doc},
    {"list_pair", list_pair, METH_VARARGS, list_pair_doc},
    {"stat_pair", stat_pair, METH_VARARGS, stat_pair_doc},
    {NULL, NULL, 0, NULL},
};

/* What this build reads by position, and the constants it shares with the Python code;
 * mirror/core.py uses the module only if they match. */
static int add_layout(PyObject *module)
{
    PyObject *layout = Py_BuildValue(
        "{s{sisisisisisisi}s{sisisi}s{sisisi}s{sLsL}s{si}}",
        "Entry", "mode", E_MODE, "size", E_SIZE, "mtime_ns", E_MTIME, "uid", E_UID,
        "gid", E_GID, "ctime_ns", E_CTIME, "atime_ns", E_ATIME,
        "Action", "path", A_PATH, "src", A_SRC, "dst", A_DST,
        "Ladder", "CLONE", CLONE, "RANGE", RANGE, "LOOP", LOOP,
        "fastcopy", "BUFFER", BUFFER, "CHUNK", CHUNK,
        "scan", "PROBE_STATS", PROBE_STATS);
    if (!layout || PyModule_AddObject(module, "LAYOUT", layout) < 0) {
        Py_XDECREF(layout);
        return -1;
    }
    return 0;
}

static int exec_module(PyObject *module)
{
    state_t *state = PyModule_GetState(module);
    state->stat_result = PyStructSequence_NewType(&stat_desc);
    if (!state->stat_result)
        return -1;
    return add_layout(module);
}

static int traverse(PyObject *module, visitproc visit, void *arg)
{
    state_t *state = PyModule_GetState(module);
    Py_VISIT(state ? state->stat_result : NULL);
    return 0;
}

static int clear(PyObject *module)
{
    state_t *state = PyModule_GetState(module);
    if (state)
        Py_CLEAR(state->stat_result);
    return 0;
}

static void free_module(void *module)
{
    clear(module);
}

static struct PyModuleDef_Slot slots[] = {
    {Py_mod_exec, exec_module},
    {0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "mirror._core", "mirror's per-folder loops in C (see mirror/core.py).",
    sizeof(state_t), methods, slots, traverse, clear, free_module,
};

PyMODINIT_FUNC PyInit__core(void)
{
    return PyModuleDef_Init(&module_def);
}
