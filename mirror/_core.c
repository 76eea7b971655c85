/* mirror._core: mirror's per-folder loops in C, with the pure-Python code as their reference.
 *
 * copy_files copies a batch of small files of one SRC folder into one DST folder with their
 * metadata, exactly as run/copyfile.py's FileCopier does for each (descriptor-relative,
 * O_NOFOLLOW, an O_TMPFILE inode linked under a new name or an O_EXCL temporary name renamed
 * over an old one, the bytes moved by the ladder's method for DST's filesystem, metadata on
 * the descriptor). It decides nothing: any item it cannot finish is undone and declined, and
 * the pure code redoes it, so errors, retries and edge cases are decided in one place.
 *
 * Linux only (O_TMPFILE, copy_file_range, /proc/self/fd); where it does not build, mirror
 * runs its pure-Python code.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/random.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
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
    {NULL, NULL, 0, NULL},
};

/* What this build reads by position; mirror/core.py compares it with the Python side. */
static int add_layout(PyObject *module)
{
    PyObject *layout = Py_BuildValue(
        "{s{sisisisisisisi}s{sisisi}s{sisisi}}",
        "Entry", "mode", E_MODE, "size", E_SIZE, "mtime_ns", E_MTIME, "uid", E_UID,
        "gid", E_GID, "ctime_ns", E_CTIME, "atime_ns", E_ATIME,
        "Action", "path", A_PATH, "src", A_SRC, "dst", A_DST,
        "Ladder", "CLONE", CLONE, "RANGE", RANGE, "LOOP", LOOP);
    if (!layout || PyModule_AddObject(module, "LAYOUT", layout) < 0) {
        Py_XDECREF(layout);
        return -1;
    }
    return 0;
}

static struct PyModuleDef_Slot slots[] = {
    {Py_mod_exec, add_layout},
    {0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "mirror._core",
    "mirror's per-folder loops in C (see mirror/core.py).", 0, methods, slots, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__core(void)
{
    return PyModuleDef_Init(&module_def);
}
