/* Writes an rpm NDB Packages.db with rpm's own code (rpmpkg.c from the Debian
 * source package of rpm, compiled by the test suite), as an oracle for imgsan's
 * reader.
 *
 * Usage: ndb_writer OUT.db < records
 * Each record on stdin: u32le package index, u32le length, then the blob bytes.
 * A record with length 0xffffffff deletes that package index instead. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include "rpmpkg.h"

static int read_u32(unsigned int *v)
{
    unsigned char b[4];
    if (fread(b, 1, 4, stdin) != 4)
        return 0;
    *v = b[0] | b[1] << 8 | b[2] << 16 | (unsigned int)b[3] << 24;
    return 1;
}

int main(int argc, char **argv)
{
    rpmpkgdb db;
    unsigned int idx, len;
    if (argc != 2 || rpmpkgOpen(&db, argv[1], O_RDWR | O_CREAT, 0644)) {
        fprintf(stderr, "cannot open %s\n", argc > 1 ? argv[1] : "(none)");
        return 1;
    }
    rpmpkgSetFsync(db, 0);
    while (read_u32(&idx) && read_u32(&len)) {
        if (len == 0xffffffffu) {
            if (rpmpkgDel(db, idx)) {
                fprintf(stderr, "delete %u failed\n", idx);
                return 1;
            }
            continue;
        }
        unsigned char *blob = malloc(len ? len : 1);
        if (!blob || fread(blob, 1, len, stdin) != len) {
            fprintf(stderr, "short record %u\n", idx);
            return 1;
        }
        if (rpmpkgPut(db, idx, blob, len)) {
            fprintf(stderr, "put %u failed\n", idx);
            return 1;
        }
        free(blob);
    }
    if (rpmpkgVerify(db)) {
        fprintf(stderr, "rpmpkgVerify failed\n");
        return 1;
    }
    rpmpkgClose(db);
    return 0;
}
