;;; Several threads allocate at once (lists, vectors, strings), each
;;; collecting now and then, and the main thread joins them and prints
;;; what each computed. Every Guile thread is a pthread that libgc must
;;; know about: this is what segfaulted with an older shim.
;;;
;;; The threads use tail-recursive loops only. Guile 3.0.8 itself (no shim)
;;; segfaults or hangs in about 1 run in 10 when several threads grow their
;;; VM stacks (a non-tail `map` over hundreds of elements, `apply` with
;;; hundreds of arguments) while they allocate; see tests/programs/README.md.
(use-modules (ice-9 threads))

(define (list-sum items)
  (let loop ((items items) (sum 0))
    (if (null? items) sum (loop (cdr items) (+ sum (car items))))))

(define (make-items id round)
  ;; Built back to front by a loop, so the stack stays shallow.
  (let loop ((i 499) (items '()))
    (if (< i 0) items (loop (- i 1) (cons (* (+ i id) (+ round 1)) items)))))

(define (work id)
  ;; Build and rebuild structures so that collections happen while the
  ;; other threads run; the result depends only on ID.
  (let loop ((round 0) (sum 0))
    (if (= round 200)
        sum
        (let* ((items (make-items id round))
               (vec (list->vector items))
               (text (number->string (vector-ref vec (modulo round 500)))))
          (when (= 0 (modulo round 50)) (gc))
          (loop (+ round 1)
                (modulo (+ sum (list-sum items) (string-length text)) 1000000007))))))

(define threads
  (map (lambda (id) (call-with-new-thread (lambda () (work id))))
       (iota 8)))

(define results (map join-thread threads))
(for-each (lambda (id result) (format #t "thread ~a: ~a~%" id result))
          (iota 8) results)
(format #t "simple join: ~a~%" (join-thread (call-with-new-thread (lambda () 42))))

;; Threads that share a mutex-protected counter and a condition variable.
(define counter 0)
(define lock (make-mutex))
(define done (make-condition-variable))
(define finished 0)
(define workers
  (map (lambda (id)
         (call-with-new-thread
          (lambda ()
            (do ((i 0 (+ i 1))) ((= i 2000))
              (with-mutex lock (set! counter (+ counter 1)))
              (when (= 0 (modulo i 500)) (make-vector 10000 id)))
            (with-mutex lock
              (set! finished (+ finished 1))
              (signal-condition-variable done)))))
       (iota 4)))
(with-mutex lock
  (let wait () (unless (= finished 4) (wait-condition-variable done lock) (wait))))
(for-each join-thread workers)
(format #t "counter: ~a~%" counter)

;; Many short-lived threads, one after another and a few at a time.
(define short-lived
  (let loop ((i 0) (sum 0))
    (if (= i 200)
        sum
        (let ((pair (list (call-with-new-thread (lambda () (string-length (make-string i #\x))))
                          (call-with-new-thread (lambda () (vector-length (make-vector i #f)))))))
          (loop (+ i 1) (+ sum (join-thread (car pair)) (join-thread (cadr pair))))))))
(format #t "short-lived threads: ~a~%" short-lived)
