// React Router (framework mode): a resource route, app/routes/internal.content-sync.ts; its action gets the
// Request as is.
import type {ActionFunctionArgs} from 'react-router'
import {createReceiver} from 'sanity-fly-sync/receiver'
import {apply, purge} from './content.ts'

const receive = createReceiver({secret: process.env.FLY_SYNC_SECRET!, apply, invalidate: purge})

export async function action({request}: ActionFunctionArgs) {
  return receive(request)
}
