/*
 * Generates the ketama reference vectors in test/hashring/fixtures/ketama-vectors.json.
 *
 * - "libmemcached": real libmemcached (Debian's libmemcached-dev), weighted ketama, asked
 *   which server each key maps to via memcached_generate_hash().
 * - "counts": digests per server from the C float formulas, computed here in C float
 *   arithmetic: libmemcached/twemproxy's
 *     floorf((float)(pct * 160 / 4 * (float)n + 0.0000000001))
 *   and libketama's
 *     floorf(pct * 40.0 * (float)n)
 *   with pct = (float)weight / (float)total.
 *
 * Build and run (needs libmemcached-dev):
 *   cc -O2 -o /tmp/ketama-vectors scripts/ketama/vectors.c -lmemcached -lm && /tmp/ketama-vectors > test/hashring/fixtures/ketama-vectors.json
 */
#include <libmemcached/memcached.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

static unsigned int libmemcached_digests(unsigned int weight, unsigned int total, unsigned int n) {
  float pct = (float)weight / (float)total;
  return (unsigned int)floorf((float)(pct * 160 / 4 * (float)n + 0.0000000001));
}

static unsigned int libketama_digests(unsigned int weight, unsigned int total, unsigned int n) {
  float pct = (float)weight / (float)total;
  return (unsigned int)floorf(pct * 40.0 * (float)n);
}

/* Deterministic key set: a small LCG so the fixture is reproducible. */
static unsigned int lcg_state = 12345;
static unsigned int lcg(void) {
  lcg_state = lcg_state * 1664525u + 1013904223u;
  return lcg_state;
}

int main(void) {
  static const unsigned int sizes[] = {1, 2, 3, 5, 7, 10, 13, 31, 100};
  static const unsigned int weight_patterns[][4] = {{1, 1, 1, 1}, {1, 2, 3, 4}, {100, 200, 300, 50}, {7, 1, 1, 1}};
  printf("{\n  \"libmemcached\": [\n");
  int first_case = 1;
  for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++) {
    for (size_t w = 0; w < sizeof weight_patterns / sizeof *weight_patterns; w++) {
      unsigned int n = sizes[s];
      memcached_st *memc = memcached_create(NULL);
      memcached_behavior_set(memc, MEMCACHED_BEHAVIOR_KETAMA_WEIGHTED, 1);
      printf("%s    {\n      \"servers\": [", first_case ? "" : ",\n");
      first_case = 0;
      for (unsigned int i = 0; i < n; i++) {
        char host[64];
        /* Every third server on the default port, to exercise the "host only" label. */
        unsigned int port = (i % 3 == 0) ? 11211 : 11300 + i;
        unsigned int weight = weight_patterns[w][i % 4];
        snprintf(host, sizeof host, "10.0.%u.%u", i / 250, i % 250 + 1);
        memcached_server_add_with_weight(memc, host, port, weight);
        printf("%s{\"host\": \"%s\", \"port\": %u, \"weight\": %u}", i ? ", " : "", host, port, weight);
      }
      printf("],\n      \"keys\": {");
      for (int k = 0; k < 200; k++) {
        char key[32];
        int len = snprintf(key, sizeof key, "key:%u:%d", lcg() % 1000000, k);
        uint32_t index = memcached_generate_hash(memc, key, (size_t)len);
        printf("%s\"%s\": %u", k ? ", " : "", key, index);
      }
      printf("}\n    }");
      memcached_free(memc);
    }
  }
  printf("\n  ],\n  \"counts\": [\n");
  int first_count = 1;
  for (unsigned int n = 1; n <= 64; n++) {
    for (size_t w = 0; w < sizeof weight_patterns / sizeof *weight_patterns; w++) {
      unsigned int total = 0;
      for (unsigned int i = 0; i < n; i++) total += weight_patterns[w][i % 4];
      for (unsigned int i = 0; i < n && i < 4; i++) {
        unsigned int weight = weight_patterns[w][i % 4];
        printf("%s    {\"weight\": %u, \"total\": %u, \"servers\": %u, \"libmemcached\": %u, \"libketama\": %u}",
               first_count ? "" : ",\n", weight, total, n, libmemcached_digests(weight, total, n),
               libketama_digests(weight, total, n));
        first_count = 0;
      }
    }
  }
  printf("\n  ]\n}\n");
  return 0;
}
