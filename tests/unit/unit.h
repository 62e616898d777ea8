/* Shared declarations of the CUnit test runner: every test file provides one
 * suite-registering function, listed in main.c. */
#ifndef DFW_UNIT_H
#define DFW_UNIT_H

#include <CUnit/CUnit.h>

void register_util_tests(void);
void register_groups_tests(void);
void register_store_tests(void);
void register_config_tests(void);
void register_compile_tests(void);
void register_scanner_tests(void);
void register_netthreat_tests(void);
void register_flowlog_tests(void);
void register_learn_tests(void);
void register_trace_tests(void);
void register_control_tests(void);

/* Adds a suite with the given tests; aborts on CUnit failure. */
struct unit_test {
	const char *name;
	CU_TestFunc fn;
};
void unit_suite(const char *name, const struct unit_test *tests, size_t n);

/* A fresh empty directory under /tmp for the running test; removed at exit. */
const char *unit_tmpdir(void);

#endif
