export default defineEventHandler(() => ({ message: 'answered by the Nitro server' }))
