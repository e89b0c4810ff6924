/* Stand-in for rpm's system.h: just enough for rpm's lib/backend/ndb/rpmpkg.c
 * to compile outside rpm's build, so the test suite can use rpm's own NDB
 * writer as an oracle. Written for imgsan; not part of rpm. */
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#define _(s) (s)
#define xmalloc malloc
#define xcalloc calloc
#define xrealloc realloc
#define xstrdup strdup
