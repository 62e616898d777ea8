/* The policy document: inventory, tags, security groups and firewall rules,
 * parsed from the INI format of docs/CONFIG.md and validated whole.
 *
 * Parsing never stops at the first problem: every error is collected as
 * "file:line: reason" (with "did you mean" for near names) and the result is
 * NULL when there was any, so bad input never reaches the store or kernel. */
#ifndef DFW_CONFIG_H
#define DFW_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "groups/groups.h"

enum dfw_action { ACT_ALLOW, ACT_DROP, ACT_REJECT };
enum dfw_dir { DIR_IN = 1, DIR_OUT = 2, DIR_INOUT = 3 };
enum dfw_category {
	CAT_EMERGENCY, CAT_INFRASTRUCTURE, CAT_ENVIRONMENT, CAT_APPLICATION,
	CAT_COUNT
};

enum ref_kind { REF_GROUP, REF_VM, REF_ADDR };

struct dfw_ref {
	enum ref_kind kind;
	size_t idx;            /* group or VM index */
	struct dfw_addr addr;  /* REF_ADDR */
};

/* Sources or destinations of a rule: any, or a union of references; with
 * negate, every address NOT in that union ("not desktops, 10.0.0.0/8"). */
struct dfw_side {
	bool any;
	bool negate;
	struct dfw_ref *refs;
	size_t nrefs;
};

/* proto 0 means any protocol (then the rest is unused).
 *   IPPROTO_TCP, IPPROTO_UDP: destination ports lo..hi; 0,0 for all ports.
 *   IPPROTO_ICMP, IPPROTO_ICMPV6: icmp_type (-1: any type) and icmp_code
 *     (-1: any code; a code needs a type).
 *   any other number: that IP protocol (IPv4 protocol / IPv6 next header). */
struct dfw_service {
	uint8_t proto;
	uint16_t lo, hi;
	int16_t icmp_type, icmp_code;
};

/* A named service object ([service NAME]): reusable in rules' services. */
struct dfw_service_obj {
	char *name;           /* lower case, unique */
	struct dfw_service *svcs;
	size_t nsvcs;
	int line;
};

struct dfw_rule {
	uint32_t id;
	char *name;
	enum dfw_category category;
	struct dfw_side src, dst;
	struct dfw_service *svcs;
	size_t nsvcs;         /* 0 means any service */
	bool applied_everywhere;
	size_t *applied_to;   /* group indexes */
	size_t napplied;
	enum dfw_dir dir;
	enum dfw_action action;
	bool log;
	bool disabled;
	/* Monitor mode (set at run time from the store's mode/ keys, see
	 * tagger/state.h): a drop or reject rule logs, counts and lets the
	 * packet through, as an allow would. */
	bool monitor;
	int line;
};

/* [detection]: what the host's anti-malware appliance (dfw-scan) does.
 * Severities are indexed low, medium, high. */
enum dfw_severity { SEV_LOW, SEV_MEDIUM, SEV_HIGH, SEV_COUNT };

struct dfw_detection {
	char *tag[SEV_COUNT];     /* the threat tag a detection of that severity sets */
	bool auto_release;        /* a clean full scan removes the threat tags */
	bool delete_files;        /* infected files are deleted, not moved aside */
	uint64_t max_file_bytes;  /* larger files are not scanned; 0: no limit */
};

/* [netthreat]: the network threat detector in dfwd (scanning behaviour). */
enum nt_mode { NT_OFF, NT_MONITOR, NT_ENFORCE };

struct dfw_netthreat {
	enum nt_mode mode;
	uint64_t window_ms;       /* the sliding window */
	uint32_t max_ports;       /* distinct (destination, protocol, port) in a window */
	uint32_t max_hosts;       /* distinct destination addresses in a window */
	uint64_t block_ms;        /* enforce: how long the attacker stays blocked */
	char *tag;                /* enforce: also put this tag on the VM; NULL: none */
};

struct dfw_policy {
	char *file;                /* name used in diagnostics */
	struct inventory inv;
	struct strv tags;          /* declared tags, spelling as declared */
	struct dfw_rule *rules;    /* sorted: category, then file order */
	size_t nrules;
	struct dfw_service_obj *services; /* [service NAME] objects, file order */
	size_t nservices;
	enum dfw_action default_action;
	bool default_log;
	size_t *dhcp_servers;      /* [global] dhcp_servers: VM indexes */
	size_t ndhcp_servers;
	struct dfw_detection detection;
	struct dfw_netthreat netthreat;
	size_t *vm_by_name, *group_by_name; /* sorted name indexes, for lookups */
};

/* Parses and validates text (the contents of file).  Returns NULL, with
 * every problem in d, when anything is wrong. */
struct dfw_policy *policy_parse(const char *text, const char *file, struct diag *d);
/* Reads path and parses it; *text_out (if non-NULL) receives the file's
 * contents, malloc'd, so that exactly what was validated can be stored. */
struct dfw_policy *policy_load(const char *path, char **text_out, struct diag *d);
/* The same from f, an open file named path in messages; closes f. */
struct dfw_policy *policy_read(FILE *f, const char *path, char **text_out, struct diag *d);
void policy_free(struct dfw_policy *p);
/* Adds to w, as "file:line: warning: ...", what is valid but surely not
 * meant: an enabled rule that never matches because an earlier enabled rule
 * (category, then file order) covers all of its traffic, saying whether it
 * is redundant (same action) or conflicting; a rule from a VM to itself; a
 * group that can never have members.  Containment is judged from the text
 * (same group or VM, CIDR in CIDR, port range in range, any ICMP type over
 * one type; negated lists only when equal), so every warning is true but
 * not every shadowed rule is found.  Monitor mode is not considered. */
void policy_warnings(const struct dfw_policy *p, struct diag *w);

/* Lookups by name, case-insensitive; -1 (as ssize_t) when absent. */
long policy_find_vm(const struct dfw_policy *p, const char *name);
/* A VM, group or host name: 1-48 letters, digits and . _ - (starting with
 * a letter or digit).  The parser also refuses, as VM and group names, IP
 * addresses and the words any, not, learn, and, or: references to such a
 * name would be read as the address or the word. */
bool policy_name_ok(const char *s);
long policy_find_group(const struct dfw_policy *p, const char *name);
/* The declared spelling of a tag, or NULL when it is not declared. */
const char *policy_find_tag(const struct dfw_policy *p, const char *tag);
/* "unknown VM 'x'" (or group), with " (did you mean 'y'?)" when a name
 * of the policy is near. */
void policy_unknown(const struct dfw_policy *p, bool group, const char *name, char *buf,
		    size_t len);
/* The nearest of the given names to s, or NULL when none is close. */
const char *nearest_name(const char *s, const char *const *names, size_t n);

/* A service as a policy writes it: "any", "tcp", "tcp/443", "tcp/4001-4002",
 * "icmp", "icmp/echo-request" (a named type), "icmp/42", "icmpv6/128:0"
 * (with a code, the type is a number), "proto/47".  Truncated to len. */
void service_format(const struct dfw_service *s, char *buf, size_t len);
/* nft's name of an ICMP (proto IPPROTO_ICMP) or ICMPv6 (IPPROTO_ICMPV6)
 * type, e.g. "echo-request"; NULL when the type has none (or for another
 * protocol). */
const char *icmp_type_name(uint8_t proto, int type);

const char *action_name(enum dfw_action a);
const char *category_name(enum dfw_category c);
const char *dir_name(enum dfw_dir d);
const char *severity_name(enum dfw_severity s);     /* "low", "medium", "high" */
int severity_parse(const char *s);                  /* -1 when unknown */
const char *nt_mode_name(enum nt_mode m);           /* "off", "monitor", "enforce" */

/* One service literal as in a rule (tcp/443, icmp/echo-request, proto/47;
 * not a service object's name): 0 with *s, 1 for "any", -1 with the
 * reason in why. */
int service_parse(const char *item, struct dfw_service *s, char *why, size_t len);
/* The rule with that id, or NULL. */
const struct dfw_rule *policy_find_rule(const struct dfw_policy *p, uint32_t id);

#endif
