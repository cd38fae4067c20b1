// Loaded before kinesalite (`node --require`). kinesalite 3.3.3, its last release, rethrows the
// 'error' of a request (index.js: `req.on('error', function(err) { throw err })`), and Node.js emits
// one when a client goes away mid-request ("aborted", ECONNRESET): one producer killed while it
// sent a record would stop the server for every client. Such an error ends that request only; any
// other error still stops the server, as it would have.
process.on('uncaughtException', (error) => {
  if (error && error.code === 'ECONNRESET' && error.message === 'aborted') {
    console.error('kinesalite: a client went away in the middle of its request; the request is dropped')
    return
  }
  console.error(error)
  process.exit(1)
})
