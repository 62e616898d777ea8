/* The etcd backend of the desired-state store (placeholder). */
#include "tagger/store_impl.h"

struct store *store_etcd_open(const char *uri, bool create, char *err,
			      size_t errlen)
{
	store_seterr(err, errlen, "%s: not yet", uri);
	return NULL;
}
