// One article as an app on next-sanity renders it (`sanityFetch`, lib/sanity-fetch.js): read from Sanity, cached
// under the answer's sync tags. A content push does not refresh it (it names routes and document tags, not sync
// tags); the sync-tag Function's push does, on every Machine.
import {notFound} from 'next/navigation'
import {sanityFetch} from '../../../lib/sanity-fetch.js'

export const dynamic = 'force-dynamic'

const ARTICLE = '*[_type == "article" && slug.current == $slug][0]{_id, _rev, title}'

export default async function LiveArticle({params}) {
  const {slug} = await params
  const article = await sanityFetch(ARTICLE, {slug})
  if (!article) notFound()
  return (
    <article data-id={article._id} data-rev={article._rev}>
      <h1>{article.title}</h1>
    </article>
  )
}
